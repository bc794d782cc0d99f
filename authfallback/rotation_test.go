package authfallback_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
)

func randomKID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func TestRotation(t *testing.T) {
	idp := newIdP(t, "ES256")
	h := newHarness(t, idp, nil)
	old := idp.Issue(nil)
	res, err := h.verify(old)
	require.NoError(t, err)
	hits := idp.JWKSHits()

	idp.Rotate()
	rotated := idp.Issue(nil)
	_, err = h.verify(rotated)
	require.ErrorIs(t, err, authfallback.ErrUnknownKeyID, "answered at once, not after a fetch")
	require.ErrorIs(t, err, authfallback.ErrInvalidToken)
	require.Eventually(t, func() bool {
		_, err := h.verify(rotated)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "the background refresh picks up the new key")
	assert.Equal(t, hits+1, idp.JWKSHits(), "exactly one refresh")

	again, err := h.verify(old)
	require.NoError(t, err)
	assert.Same(t, res, again, "the old key is unchanged: its cached verification survives the refresh")

	idp.RetireOldKeys()
	require.NoError(t, h.v.Refresh(context.Background()))
	_, err = h.verify(old)
	assert.ErrorIs(t, err, authfallback.ErrUnknownKeyID, "a key that left the set verifies nothing, cached or not")
	_, err = h.verify(rotated)
	assert.NoError(t, err)
	assert.Equal(t, 1, h.v.Status().CachedTokens, "cache entries of the retired key were dropped")
}

func TestUnknownKIDFloodDuringRotation(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	const interval = 200 * time.Millisecond
	h := newHarness(t, idp, func(c *authfallback.Config) { c.UnknownKIDRefreshInterval = interval })
	hits0 := idp.JWKSHits()
	start := time.Now()

	var stop atomic.Bool
	var calls atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				tok := idp.IssueWithHeader(map[string]any{"kid": randomKID()}, nil)
				_, err := h.verify(tok)
				if !errors.Is(err, authfallback.ErrUnknownKeyID) {
					t.Errorf("flood token: %v", err)
					return
				}
				calls.Add(1)
			}
		}()
	}
	require.Eventually(t, func() bool { return calls.Load() > 50 }, 5*time.Second, time.Millisecond, "the flood runs before the rotation")
	idp.Rotate()
	rotated := idp.Issue(nil)
	assert.Eventually(t, func() bool {
		_, err := h.verify(rotated)
		return err == nil
	}, 3*time.Second, 5*time.Millisecond, "a flood of random kids does not hold up a real rotation")
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)

	assert.Positive(t, calls.Load())
	maxHits := int64(elapsed/interval) + 2
	assert.LessOrEqual(t, idp.JWKSHits()-hits0, maxHits, "refreshes are rate limited (%d calls in %v)", calls.Load(), elapsed)
}

func TestTokenCache(t *testing.T) {
	idp := newIdP(t, "EdDSA")
	h := newHarness(t, idp, func(c *authfallback.Config) { c.MaxCachedTokens = 10 })
	tok := idp.Issue(nil)
	a, err := h.verify(tok)
	require.NoError(t, err)
	b, err := h.verify(tok)
	require.NoError(t, err)
	assert.Same(t, a, b, "a repeated token is served from the cache")

	for range 50 {
		_, err := h.verify(idp.Issue(jwt.MapClaims{"jti": randomKID()}))
		require.NoError(t, err)
	}
	assert.LessOrEqual(t, h.v.Status().CachedTokens, 10, "bounded")

	// Degraded results are copies; the cached Result is never modified.
	tok2 := idp.Issue(nil)
	clean, err := h.verify(tok2)
	require.NoError(t, err)
	idp.SetFail5xx(true)
	require.Error(t, h.v.Refresh(context.Background()))
	deg, err := h.verify(tok2)
	require.NoError(t, err)
	assert.True(t, deg.Degraded)
	assert.False(t, clean.Degraded)

	off := newHarness(t, idp, func(c *authfallback.Config) { c.MaxCachedTokens = -1 })
	idp.Reset()
	require.NoError(t, off.v.Refresh(context.Background()))
	x, err := off.verify(tok)
	require.NoError(t, err)
	y, err := off.verify(tok)
	require.NoError(t, err)
	assert.NotSame(t, x, y)
	assert.Zero(t, off.v.Status().CachedTokens)
}
