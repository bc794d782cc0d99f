package degrade

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errBoom = errors.New("boom")

type changes struct {
	mu sync.Mutex
	l  []ModeChange
}

func (c *changes) add(ch ModeChange) { c.mu.Lock(); c.l = append(c.l, ch); c.mu.Unlock() }
func (c *changes) get() []ModeChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ModeChange(nil), c.l...)
}

func TestReportDrivesMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ch changes
		c := New(Config{
			Dependencies: map[string]Mode{"idp": ReadOnly},
			OnModeChange: ch.add,
		})
		defer c.Close()
		start := time.Now()

		// 9 failures: below MinReports (10), still Normal.
		for range 9 {
			c.Report("idp", errBoom)
		}
		assert.Equal(t, Normal, c.Mode())

		// 8 successes + 9 failures earlier = 17 reports, 53 % failed.
		for range 8 {
			c.Report("idp", nil)
		}
		assert.Equal(t, ReadOnly, c.Mode())
		require.Len(t, ch.get(), 1)
		got := ch.get()[0]
		assert.Equal(t, Normal, got.From)
		assert.Equal(t, ReadOnly, got.To)
		assert.Contains(t, got.Reason, "idp: 9 of 1")
		assert.False(t, got.Forced)
		assert.Equal(t, start, got.At)

		// Failures age out of the 60 s window without any new report.
		time.Sleep(61 * time.Second)
		synctest.Wait()
		assert.Equal(t, Normal, c.Mode())
		require.Len(t, ch.get(), 2)
		assert.Equal(t, ReadOnly, ch.get()[1].From)
		assert.Equal(t, Normal, ch.get()[1].To)

		st := c.Status()
		back := ch.get()[1].At.Sub(start)
		assert.LessOrEqual(t, back, 61*time.Second)
		assert.InDelta(t, back.Seconds(), st.TimeInMode[ReadOnly], 0.001)
		assert.InDelta(t, (61*time.Second - back).Seconds(), st.TimeInMode[Normal], 0.001)
	})
}

func TestFailureRateThreshold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Config{})
		defer c.Close()
		// 19 % failures: up.
		for i := range 100 {
			var err error
			if i < 19 {
				err = errBoom
			}
			c.Report("db", err)
		}
		assert.Equal(t, Normal, c.Mode())
		c.Report("db", errBoom) // 20 of 101 = 19.8 %
		assert.Equal(t, Normal, c.Mode())
		c.Report("db", errBoom) // 21 of 102 = 20.6 %
		assert.Equal(t, Degraded, c.Mode(), "unlisted dependency causes Degraded")
		assert.Equal(t, "db: 21 of 102 calls failed", c.Reason())
	})
}

func TestCanceledIsIgnored(t *testing.T) {
	c := New(Config{MinReports: 1})
	defer c.Close()
	c.Report("x", context.Canceled)
	c.Report("x", errors.Join(errBoom, context.Canceled))
	assert.Equal(t, Normal, c.Mode())
	assert.Equal(t, 0, c.Status().Dependencies["x"].Reports)
	c.Report("x", context.DeadlineExceeded)
	assert.Equal(t, Degraded, c.Mode())
}

func TestSetDownWorstWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ch changes
		c := New(Config{
			Dependencies: map[string]Mode{"idp": ReadOnly, "payments": Degraded, "metrics": Normal},
			OnModeChange: ch.add,
		})
		defer c.Close()
		c.SetDown("metrics", true, "")
		assert.Equal(t, Normal, c.Mode(), "a dependency mapped to Normal changes nothing")

		c.SetDown("payments", true, "breaker open")
		assert.Equal(t, Degraded, c.Mode())
		assert.Equal(t, "payments: breaker open", c.Reason())

		time.Sleep(time.Minute)
		c.SetDown("idp", true, "jwks fallback")
		assert.Equal(t, ReadOnly, c.Mode())
		assert.Equal(t, "idp: jwks fallback", c.Reason())

		c.SetDown("payments", false, "")
		assert.Equal(t, ReadOnly, c.Mode())
		c.SetDown("idp", false, "")
		assert.Equal(t, Normal, c.Mode())

		got := ch.get()
		require.Len(t, got, 3)
		assert.Equal(t, []Mode{Degraded, ReadOnly, Normal}, []Mode{got[0].To, got[1].To, got[2].To})

		st := c.Status()
		assert.InDelta(t, 60, st.TimeInMode[Degraded], 0.001)
		assert.False(t, st.Dependencies["idp"].Down)
		assert.Equal(t, ReadOnly, st.Dependencies["idp"].Causes)
	})
}

func TestForceAndRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ch changes
		c := New(Config{OnModeChange: ch.add})
		defer c.Close()
		c.SetDown("payments", true, "breaker open")
		require.Equal(t, Degraded, c.Mode())

		c.Force(ReadOnly, "incident 4711")
		assert.Equal(t, ReadOnly, c.Mode())
		assert.Equal(t, "incident 4711", c.Reason())
		assert.True(t, c.Status().Forced)

		c.Force(Normal, "ignore payments")
		assert.Equal(t, Normal, c.Mode(), "forcing Normal overrides a down dependency")

		c.Release()
		assert.Equal(t, Degraded, c.Mode())
		assert.Equal(t, "payments: breaker open", c.Reason())
		got := ch.get()
		require.Len(t, got, 4)
		assert.True(t, got[1].Forced)
		assert.Equal(t, "incident 4711", got[1].Reason)
		assert.False(t, got[3].Forced)

		assert.Panics(t, func() { c.Force(Mode(7), "") })
	})
}

func TestHookOutsideLock(t *testing.T) {
	var c *Controller
	c = New(Config{OnModeChange: func(ModeChange) {
		_ = c.Reason() // would deadlock if called under the lock
		_ = c.Status()
	}})
	defer c.Close()
	c.Force(ReadOnly, "x")
	assert.Equal(t, ReadOnly, c.Mode())
}

func TestDependencyLimit(t *testing.T) {
	c := New(Config{MinReports: 1})
	defer c.Close()
	for i := range maxDependencies + 10 {
		c.Report(string(rune('a'+i%26))+time.Duration(i).String(), nil)
	}
	assert.Len(t, c.Status().Dependencies, maxDependencies)
}

func TestNewPanicsOnBadConfig(t *testing.T) {
	assert.Panics(t, func() { New(Config{FailureRate: 2}) })
	assert.Panics(t, func() { New(Config{Dependencies: map[string]Mode{"x": 9}}) })
}

func TestModeText(t *testing.T) {
	for _, m := range []Mode{Normal, Degraded, ReadOnly} {
		b, err := m.MarshalText()
		require.NoError(t, err)
		var back Mode
		require.NoError(t, back.UnmarshalText(b))
		assert.Equal(t, m, back)
	}
	var m Mode
	assert.Error(t, m.UnmarshalText([]byte("panic")))
	_, err := Mode(5).MarshalText()
	assert.Error(t, err)
	assert.Equal(t, "critical", Critical.String())
}

func TestWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newWindow(60*time.Second, t0)
	w.record(t0, true)
	w.record(t0.Add(30*time.Second), false)
	total, failed := w.counts(t0.Add(30 * time.Second))
	assert.Equal(t, 2, total)
	assert.Equal(t, 1, failed)
	total, failed = w.counts(t0.Add(61 * time.Second))
	assert.Equal(t, 1, total)
	assert.Equal(t, 0, failed)
	// A bucket reused a full window later starts from zero.
	w.record(t0.Add(120*time.Second), false)
	total, failed = w.counts(t0.Add(120 * time.Second))
	assert.Equal(t, 1, total)
	assert.Equal(t, 0, failed)
}

// lockProbeHandler is a slog.Handler that calls back into the controller,
// which deadlocks if it is called under the controller's lock.
type lockProbeHandler struct {
	c    **Controller
	msgs *[]string
	mu   *sync.Mutex
}

func (h lockProbeHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h lockProbeHandler) Handle(_ context.Context, r slog.Record) error {
	_ = (*h.c).Reason()
	h.mu.Lock()
	*h.msgs = append(*h.msgs, r.Message)
	h.mu.Unlock()
	return nil
}
func (h lockProbeHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h lockProbeHandler) WithGroup(string) slog.Handler      { return h }

func TestLoggerOutsideLockAndSince(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c *Controller
		var msgs []string
		var mu sync.Mutex
		c = New(Config{MinReports: 1, Logger: slog.New(lockProbeHandler{&c, &msgs, &mu})})
		defer c.Close()
		time.Sleep(time.Second)
		c.SetDown("idp", true, "fallback")
		assert.Equal(t, time.Now(), c.Status().Dependencies["idp"].Since)
		c.Report("db", errBoom)
		time.Sleep(time.Second)
		c.SetDown("idp", false, "")
		assert.Equal(t, time.Now(), c.Status().Dependencies["idp"].Since)
		mu.Lock()
		defer mu.Unlock()
		assert.Contains(t, msgs, "degrade: dependency state")
		assert.Contains(t, msgs, "degrade: mode change")
	})
}

func TestCustomWindowAndRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(Config{Window: 10 * time.Second, FailureRate: 0.5, MinReports: 2})
		defer c.Close()
		c.Report("x", errBoom)
		c.Report("x", nil)
		assert.Equal(t, Degraded, c.Mode(), "1 of 2 = 50 %")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		assert.Equal(t, Normal, c.Mode(), "aged out of the 10 s window")
	})
}
