package authfallback_test

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// introBubble runs f in a synctest bubble with a Verifier that introspects
// through idp's handler in process.
func introBubble(t *testing.T, mod func(*authfallback.Config), f func(idp *authtest.Server, v *authfallback.Verifier)) {
	idp := newIdP(t, "EdDSA")
	synctest.Test(t, func(t *testing.T) {
		cfg := authfallback.Config{
			Issuer:     idp.Issuer(),
			Audience:   []string{idp.Audience()},
			HTTPClient: &http.Client{Transport: idp.InProcessTransport()},
			AuditLog:   discard(),
			Introspection: &authfallback.IntrospectionConfig{
				URL: idp.IntrospectionURL(), ClientID: idp.ClientID(), ClientSecret: idp.ClientSecret(),
				ProbeInterval: -1,
			},
		}
		if mod != nil {
			mod(&cfg)
		}
		v, err := authfallback.New(cfg)
		require.NoError(t, err)
		defer v.Close()
		f(idp, v)
	})
}

func TestIntrospectionGraceWindowInOutage(t *testing.T) {
	introBubble(t, func(c *authfallback.Config) {
		c.Introspection.MaxCachedTokens = -1
		c.Policy.ExpiredGrace = 5 * time.Minute
		c.Policy.MaxOfflineDuration = time.Hour
	}, func(idp *authtest.Server, v *authfallback.Verifier) {
		ctx := context.Background()
		tok := idp.IssueOpaque(map[string]any{"exp": time.Now().Add(10 * time.Minute).Unix()})
		_, err := v.Verify(ctx, tok)
		require.NoError(t, err)

		time.Sleep(time.Minute)
		idp.SetDown(true)
		defer idp.SetDown(false)
		res, err := v.Verify(ctx, tok)
		require.NoError(t, err)
		assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, res.Reason)

		// Expired during the outage: a window, any number of uses.
		time.Sleep(10 * time.Minute)
		for range 3 {
			res, err = v.Verify(ctx, tok)
			require.NoError(t, err)
			assert.Equal(t, authfallback.ReasonExpiredGrace, res.Reason)
			assert.True(t, res.Degraded)
			time.Sleep(time.Minute)
		}
		time.Sleep(3 * time.Minute) // past exp + 5 min
		_, err = v.Verify(ctx, tok)
		assert.ErrorIs(t, err, authfallback.ErrInvalidToken)
	})
}

func TestIntrospectionMaxOfflineDuration(t *testing.T) {
	introBubble(t, func(c *authfallback.Config) {
		c.Introspection.MaxCachedTokens = -1
		c.Policy.MaxOfflineDuration = 20 * time.Minute
	}, func(idp *authtest.Server, v *authfallback.Verifier) {
		ctx := context.Background()
		tok := idp.IssueOpaque(nil) // 1 h
		_, err := v.Verify(ctx, tok)
		require.NoError(t, err)
		idp.SetDown(true)
		defer idp.SetDown(false)
		time.Sleep(time.Second)
		_, err = v.Verify(ctx, tok)
		require.NoError(t, err)
		st := v.Status().Introspection
		require.True(t, st.Outage)
		assert.Equal(t, st.OutageSince.Add(20*time.Minute), st.FallbackDeadline)
		time.Sleep(20 * time.Minute)
		_, err = v.Verify(ctx, tok)
		assert.ErrorIs(t, err, authfallback.ErrFallbackExpired)
	})
}

func TestIntrospectionCacheBoundedByExpAndTTL(t *testing.T) {
	introBubble(t, func(c *authfallback.Config) {
		c.Introspection.CacheTTL = time.Minute
	}, func(idp *authtest.Server, v *authfallback.Verifier) {
		ctx := context.Background()
		short := idp.IssueOpaque(map[string]any{"exp": time.Now().Add(30 * time.Second).Unix()})
		long := idp.IssueOpaque(nil)
		for _, tok := range []string{short, long} {
			_, err := v.Verify(ctx, tok)
			require.NoError(t, err)
		}
		hits := idp.IntrospectionHits()
		time.Sleep(29 * time.Second)
		for _, tok := range []string{short, long} {
			_, err := v.Verify(ctx, tok)
			require.NoError(t, err)
		}
		assert.Equal(t, hits, idp.IntrospectionHits(), "both answered from the cache")
		time.Sleep(2 * time.Second)
		_, err := v.Verify(ctx, short)
		assert.ErrorIs(t, err, authfallback.ErrInvalidToken, "never cached past exp")
		assert.Equal(t, hits+1, idp.IntrospectionHits())
		// A revocation is seen once CacheTTL has passed.
		idp.Revoke(long)
		_, err = v.Verify(ctx, long)
		assert.NoError(t, err, "still cached")
		time.Sleep(30 * time.Second)
		_, err = v.Verify(ctx, long)
		assert.ErrorIs(t, err, authfallback.ErrInactive)
	})
}

func TestDPoPReplayCacheMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := authfallback.NewMemoryDPoPReplayCache(2)
		ctx := context.Background()
		exp := time.Now().Add(time.Minute)
		seen, err := c.Seen(ctx, "a", exp)
		require.NoError(t, err)
		assert.False(t, seen)
		seen, err = c.Seen(ctx, "a", exp)
		require.NoError(t, err)
		assert.True(t, seen)
		_, err = c.Seen(ctx, "b", exp)
		require.NoError(t, err)
		_, err = c.Seen(ctx, "c", exp)
		assert.Error(t, err, "full of unexpired proofs: fail closed")
		time.Sleep(time.Minute)
		seen, err = c.Seen(ctx, "c", time.Now().Add(time.Minute))
		require.NoError(t, err, "expired entries make room")
		assert.False(t, seen)
		seen, err = c.Seen(ctx, "a", time.Now().Add(time.Minute))
		require.NoError(t, err)
		assert.False(t, seen, "an expired entry is forgotten")
	})
}

// Reconciliation comes without a request once the endpoint is back: the
// outage's probe re-introspects a token accepted degraded.
func TestIntrospectionProbeReconcilesWithoutTraffic(t *testing.T) {
	var found []authfallback.ReconcileEvent
	var exits int
	introBubble(t, func(c *authfallback.Config) {
		c.Introspection.MaxCachedTokens = -1
		c.OnReconcile = func(ev authfallback.ReconcileEvent) { found = append(found, ev) }
		c.Introspection.OnOutageExit = func(ev authfallback.FallbackEvent) {
			assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, ev.Reason)
			exits++
		}
		c.OnFallbackExit = func(authfallback.FallbackEvent) { t.Error("the key set's hook called for introspection") }
	}, func(idp *authtest.Server, v *authfallback.Verifier) {
		ctx := context.Background()
		tok := idp.IssueOpaque(map[string]any{"sub": "heidi"})
		_, err := v.Verify(ctx, tok)
		require.NoError(t, err)
		idp.SetDown(true)
		res, err := v.Verify(ctx, tok)
		require.NoError(t, err)
		require.True(t, res.Degraded)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		assert.True(t, v.Status().Introspection.Outage, "still down: the probes fail")

		idp.Revoke(tok)
		idp.SetDown(false)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		assert.False(t, v.Status().Introspection.Outage)
		assert.Equal(t, 1, exits)
		require.Len(t, found, 1)
		assert.Equal(t, authfallback.FindingInactive, found[0].Finding)
		assert.Equal(t, "heidi", found[0].Subject)
	})
}
