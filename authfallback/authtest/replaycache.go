package authtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// DPoPReplayCache is the method set of authfallback.DPoPReplayCache
// (declared here again so that authtest does not import authfallback).
type DPoPReplayCache interface {
	Seen(ctx context.Context, id string, expires time.Time) (bool, error)
}

// RunDPoPReplayCache is the conformance suite of authfallback.DPoPReplayCache:
// the memory cache and those of the driver modules pass it. newCache
// returns an empty cache (or one whose ids cannot collide with another
// test's). It waits for real time (under a second) for expiry.
func RunDPoPReplayCache(t *testing.T, newCache func(t *testing.T) DPoPReplayCache) {
	ctx := context.Background()
	id := func() string {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	t.Run("first seen, then replayed", func(t *testing.T) {
		c := newCache(t)
		a, b := id(), id()
		exp := time.Now().Add(time.Minute)
		seen, err := c.Seen(ctx, a, exp)
		require.NoError(t, err)
		assert.False(t, seen)
		seen, err = c.Seen(ctx, a, exp)
		require.NoError(t, err)
		assert.True(t, seen)
		seen, err = c.Seen(ctx, b, exp)
		require.NoError(t, err)
		assert.False(t, seen, "another id")
	})
	t.Run("concurrent: exactly one first", func(t *testing.T) {
		c := newCache(t)
		a := id()
		exp := time.Now().Add(time.Minute)
		var mu sync.Mutex
		firsts := 0
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				seen, err := c.Seen(ctx, a, exp)
				assert.NoError(t, err)
				if !seen && err == nil {
					mu.Lock()
					firsts++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		assert.Equal(t, 1, firsts)
	})
	t.Run("expiry", func(t *testing.T) {
		c := newCache(t)
		a := id()
		seen, err := c.Seen(ctx, a, time.Now().Add(300*time.Millisecond))
		require.NoError(t, err)
		require.False(t, seen)
		seen, err = c.Seen(ctx, a, time.Now().Add(time.Minute))
		require.NoError(t, err)
		require.True(t, seen, "not expired yet")
		require.Eventually(t, func() bool {
			seen, err := c.Seen(ctx, a, time.Now().Add(time.Minute))
			return err == nil && !seen
		}, 3*time.Second, 100*time.Millisecond, "forgotten once expired")
		seen, err = c.Seen(ctx, a, time.Now().Add(time.Minute))
		require.NoError(t, err)
		assert.True(t, seen, "recorded again")
	})
}
