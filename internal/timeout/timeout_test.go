package timeout

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errCause = errors.New("test: timed out")

type key struct{}

func TestErrFollowsTheClockWithoutDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.WithValue(context.Background(), key{}, "v"), time.Second, errCause)
		require.NotNil(t, c)
		assert.NoError(t, c.Err())
		assert.Equal(t, "v", c.Value(key{}))
		dl, ok := c.Deadline()
		assert.True(t, ok)
		assert.Equal(t, time.Now().Add(time.Second), dl)
		assert.False(t, c.made.Load(), "no timer until someone waits")
		time.Sleep(time.Second)
		assert.True(t, c.TimedOut())
		assert.ErrorIs(t, c.Err(), context.DeadlineExceeded)
		assert.Equal(t, errCause, context.Cause(c), "the cause, as context.WithDeadlineCause's")
		select {
		case <-c.Done():
		default:
			t.Fatal("Done open after the deadline")
		}
	})
}

func TestCauseFirstAfterDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Second, errCause)
		time.Sleep(2 * time.Second)
		assert.Equal(t, errCause, context.Cause(c), "Cause asked before Err or Done")
	})
}

func TestDoneWakesAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Second, errCause)
		start := time.Now()
		<-c.Done()
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, errCause, context.Cause(c))
		assert.True(t, c.TimedOut())
	})
}

func TestStop(t *testing.T) {
	for _, waited := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			c := New(context.Background(), time.Second, errCause)
			if waited {
				_ = c.Done()
			}
			c.Stop()
			c.Stop()
			assert.ErrorIs(t, c.Err(), context.Canceled)
			assert.False(t, c.TimedOut())
			<-c.Done()
			time.Sleep(2 * time.Second)
			assert.False(t, c.TimedOut(), "stopped before its deadline")
			assert.ErrorIs(t, context.Cause(c), context.Canceled)
		})
	}
}

func TestParentEnds(t *testing.T) {
	for _, waited := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			parentCause := errors.New("client gone")
			parent, cancel := context.WithCancelCause(context.Background())
			c := New(parent, time.Second, errCause)
			if waited {
				_ = c.Done()
			}
			cancel(parentCause)
			assert.ErrorIs(t, c.Err(), context.Canceled)
			assert.Equal(t, parentCause, context.Cause(c))
			<-c.Done()
			assert.False(t, c.TimedOut())
		})
	}
}

func TestParentDeadlineSooner(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	assert.Nil(t, New(parent, time.Minute, errCause), "the parent's deadline ends it first")
	assert.NotNil(t, New(parent, time.Millisecond, errCause))
}

func TestChildrenAndAfterFunc(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(context.Background(), time.Second, errCause)
		before := runtime.NumGoroutine()
		child, cancel := context.WithCancel(context.WithValue(c, key{}, "child"))
		defer cancel()
		assert.Equal(t, before, runtime.NumGoroutine(), "a child attaches without a goroutine")
		ran := make(chan struct{})
		context.AfterFunc(c, func() { close(ran) })
		<-child.Done()
		<-ran
		assert.Equal(t, errCause, context.Cause(child))
		assert.Equal(t, "child", child.Value(key{}))
	})
}

func TestStopOnClose(t *testing.T) {
	c := New(context.Background(), time.Minute, errCause)
	body := c.StopOnClose(io.NopCloser(strings.NewReader("x")))
	b, err := io.ReadAll(body)
	require.NoError(t, err)
	assert.Equal(t, "x", string(b))
	assert.NoError(t, c.Err(), "running until the body is closed")
	require.NoError(t, body.Close())
	assert.ErrorIs(t, c.Err(), context.Canceled)

	type rwc struct {
		io.Reader
		io.Writer
		io.Closer
	}
	c2 := New(context.Background(), time.Minute, errCause)
	wrapped := c2.StopOnClose(rwc{strings.NewReader(""), io.Discard, io.NopCloser(nil)})
	_, isWriter := wrapped.(io.Writer)
	assert.True(t, isWriter, "a 101 body stays writable")
	require.NoError(t, wrapped.Close())
	assert.ErrorIs(t, c2.Err(), context.Canceled)
}

func TestInitInStruct(t *testing.T) {
	var s struct {
		n int
		c Context
	}
	parent, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	assert.False(t, s.c.Init(parent, time.Minute, errCause), "the parent's deadline ends it first")
	require.True(t, s.c.Init(context.Background(), time.Minute, errCause))
	assert.NoError(t, s.c.Err())
	s.c.Stop()
	assert.ErrorIs(t, s.c.Err(), context.Canceled)
}

func TestConcurrentUse(t *testing.T) {
	c := New(context.Background(), time.Millisecond, errCause)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for c.Err() == nil {
				_ = c.Value(key{})
			}
			<-c.Done()
		}()
	}
	go func() { <-c.Done(); c.Stop() }()
	for range 4 {
		<-done
	}
	assert.True(t, c.TimedOut())
}

func BenchmarkNew(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("context.WithTimeoutCause", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeoutCause(parent, time.Second, errCause)
			_ = ctx.Err()
			cancel()
		}
	})
	b.Run("timeout.New", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := New(parent, time.Second, errCause)
			_ = c.Err()
			c.Stop()
		}
	})
}
