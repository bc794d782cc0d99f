package authfallback_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// A replica in fallback mode whose retry has backed off far (RefreshInterval
// 1 h) leaves fallback mode within a few StateFlushIntervals of another
// replica of its fleet reaching the IdP again, not after its backoff: the
// shared key set record says the IdP is back. A replica that still cannot
// reach the IdP tries once per new record, not once per flush.
func TestSharedStateEndsFallbackAcrossFleet(t *testing.T) {
	store := authfallback.NewMemoryState()
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	var blocked atomic.Bool // B's own network to the IdP
	var bFetches atomic.Int32
	newReplica := func(client *http.Client, exits *atomic.Int32) *authfallback.Verifier {
		v, err := authfallback.New(authfallback.Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			HTTPClient: client, FetchTimeout: time.Second, RefreshInterval: time.Hour,
			AuditLog: slog.New(slog.DiscardHandler), State: store, StateFlushInterval: 20 * time.Millisecond,
			Policy:         authfallback.Policy{AllowedScopes: []string{"read"}},
			OnFallbackExit: func(authfallback.FallbackEvent) { exits.Add(1) },
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = v.Close() })
		return v
	}
	var aExits, bExits atomic.Int32
	a := newReplica(&http.Client{}, &aExits)
	b := newReplica(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		bFetches.Add(1)
		if blocked.Load() {
			return nil, errFetchBlocked
		}
		return http.DefaultTransport.RoundTrip(r)
	})}, &bExits)
	ctx := context.Background()

	idp.SetDown(true)
	require.Error(t, a.Refresh(ctx))
	// B fails often enough that its next attempt is about half an hour away.
	for range 13 {
		require.Error(t, b.Refresh(ctx))
	}
	require.True(t, a.Status().Fallback)
	require.True(t, b.Status().Fallback)
	time.Sleep(100 * time.Millisecond) // a few flushes: nothing newer in the store
	require.True(t, b.Status().Fallback)

	// The IdP is back, but B's network to it is not yet: A's fetch makes B
	// try once, and B stays in fallback mode, keeping to its backoff.
	idp.SetDown(false)
	blocked.Store(true)
	before := bFetches.Load()
	require.NoError(t, a.Refresh(ctx))
	require.False(t, a.Status().Fallback)
	require.Eventually(t, func() bool { return bFetches.Load() > before }, 2*time.Second, 10*time.Millisecond,
		"B retries at once when the shared record says another replica reached the IdP")
	time.Sleep(200 * time.Millisecond) // ten flushes
	assert.Equal(t, before+1, bFetches.Load(), "one attempt per new record, not one per flush")
	assert.True(t, b.Status().Fallback)

	// B can reach the IdP again; A's next fetch tells it to try: it leaves
	// fallback mode without waiting for its half-hour backoff.
	blocked.Store(false)
	require.NoError(t, a.Refresh(ctx))
	require.Eventually(t, func() bool { return !b.Status().Fallback }, 2*time.Second, 10*time.Millisecond,
		"B leaves fallback mode once another replica has reached the IdP")
	// OnFallbackExit runs after the refresh has released its lock, so it
	// may come just after Status says so.
	require.Eventually(t, func() bool { return bExits.Load() >= 1 }, 2*time.Second, time.Millisecond, "B's exit hook")
	assert.Equal(t, int32(1), bExits.Load())
}

var errFetchBlocked = errors.New("test: no route to the IdP")

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A replica started during an IdP outage, with the keys another replica
// shared, counts the outage for the grace window from when those keys were
// due for a refresh, not from its own start: a token the first replica saw
// valid, and that expired after the outage began but before the second
// replica started, keeps its grace window there too.
func TestGraceOnAReplicaStartedDuringTheOutage(t *testing.T) {
	store := authfallback.NewMemoryState()
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	newReplica := func() *authfallback.Verifier {
		v, err := authfallback.New(authfallback.Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			HTTPClient: &http.Client{}, FetchTimeout: time.Second, RefreshInterval: time.Second,
			AuditLog: slog.New(slog.DiscardHandler), State: store, StateFlushInterval: 20 * time.Millisecond,
			Policy: authfallback.Policy{AllowedScopes: []string{"read"}},
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = v.Close() })
		return v
	}
	ctx := context.Background()
	a := newReplica()
	fetched := time.Now()
	// Expires after a's keys are due for a refresh (fetched + 1 s), and
	// before b starts.
	exp := fetched.Add(2 * time.Second).Truncate(time.Second)
	if !exp.After(fetched.Add(1100 * time.Millisecond)) {
		exp = exp.Add(time.Second)
	}
	tok := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "read", "exp": exp.Unix()})
	_, err := a.Verify(ctx, tok)
	require.NoError(t, err)
	idp.SetDown(true)
	require.Eventually(t, func() bool { return a.Status().Fallback }, 5*time.Second, 10*time.Millisecond)

	time.Sleep(time.Until(exp.Add(300 * time.Millisecond)))
	b := newReplica()
	require.Eventually(t, func() bool { return b.Status().Fallback }, 5*time.Second, 10*time.Millisecond)
	require.True(t, b.Status().FallbackSince.After(exp), "b entered fallback mode after the token expired")
	res, err := b.Verify(ctx, tok)
	require.NoError(t, err, "the grace window a gives, b gives too")
	assert.Equal(t, authfallback.ReasonExpiredGrace, res.Reason)
	res, err = a.Verify(ctx, tok)
	require.NoError(t, err)
	assert.Equal(t, authfallback.ReasonExpiredGrace, res.Reason)
}
