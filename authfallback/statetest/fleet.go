package statetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// RunFleet runs two Verifiers sharing one store (made by newStore) through
// an IdP outage, over real HTTP: replica A sees a token valid; the IdP goes
// down; replica B starts on an empty disk, verifies at once with the keys
// A shared, and honours A's grace record for that token (every use inside
// exp + ExpiredGrace accepted degraded, refused after); when the IdP is
// back, A reconciles what B accepted degraded. It takes a few seconds of
// real time (token expiry has second precision).
func RunFleet(t *testing.T, newStore func(t *testing.T) authfallback.StateStore) {
	store := newStore(t)
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	const grace = 2 * time.Second
	var mu sync.Mutex
	var findings []authfallback.ReconcileEvent
	newReplica := func(onReconcile func(authfallback.ReconcileEvent)) *authfallback.Verifier {
		v, err := authfallback.New(authfallback.Config{
			Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
			HTTPClient: &http.Client{}, FetchTimeout: time.Second, RefreshInterval: time.Hour,
			AuditLog: slog.New(slog.DiscardHandler), State: store, StateFlushInterval: 20 * time.Millisecond,
			Policy:      authfallback.Policy{AllowedScopes: []string{"orders:read"}, ExpiredGrace: grace},
			OnReconcile: onReconcile,
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = v.Close() })
		return v
	}
	serve := func(v *authfallback.Verifier) *httptest.Server {
		srv := httptest.NewServer(v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		})))
		t.Cleanup(srv.Close)
		return srv
	}
	get := func(srv *httptest.Server, tok string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/orders", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp
	}
	hashOf := func(tok string) string { h := sha256.Sum256([]byte(tok)); return hex.EncodeToString(h[:]) }
	ctx := context.Background()

	a := newReplica(func(ev authfallback.ReconcileEvent) { mu.Lock(); findings = append(findings, ev); mu.Unlock() })
	srvA := serve(a)
	require.Eventually(t, func() bool { _, ok, _ := store.LoadKeys(ctx, idp.Issuer()); return ok }, 5*time.Second, 10*time.Millisecond,
		"A shares the key set it fetched")

	exp := time.Now().Add(4 * time.Second).Truncate(time.Second)
	tok := idp.Issue(jwt.MapClaims{"sub": "alice", "exp": exp.Unix(), "scope": "orders:read orders:write"})
	neverSeen := idp.Issue(jwt.MapClaims{"sub": "mallory", "exp": exp.Unix(), "scope": "orders:read"})
	resp := get(srvA, tok)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Holdfast-Degraded"))
	require.Eventually(t, func() bool { _, ok, _ := store.Seen(ctx, hashOf(tok)); return ok }, 5*time.Second, 10*time.Millisecond,
		"A shares the seen-valid record")

	idp.SetDown(true)
	require.Error(t, a.Refresh(ctx))

	// B: empty disk, IdP down. It verifies at once from the shared store.
	b := newReplica(nil)
	srvB := serve(b)
	require.Positive(t, b.Status().KeyCount, "keys from the shared store")
	require.Eventually(t, func() bool { return b.Status().Fallback }, 5*time.Second, 10*time.Millisecond)
	fresh := idp.Issue(jwt.MapClaims{"sub": "bob", "scope": "orders:read"})
	resp = get(srvB, fresh)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, resp.Header.Get("Holdfast-Degraded"))

	// tok expires during the outage: B honours A's grace record, on every
	// request inside the window.
	time.Sleep(time.Until(exp.Add(100 * time.Millisecond)))
	for i := range 3 {
		resp = get(srvB, tok)
		require.Equal(t, http.StatusNoContent, resp.StatusCode, "use %d inside the grace window", i)
		assert.Equal(t, authfallback.ReasonExpiredGrace, resp.Header.Get("Holdfast-Degraded"))
	}
	assert.Equal(t, http.StatusUnauthorized, get(srvB, neverSeen).StatusCode, "no replica saw it valid: no grace")
	time.Sleep(time.Until(exp.Add(grace + 1100*time.Millisecond)))
	assert.Equal(t, http.StatusUnauthorized, get(srvB, tok).StatusCode, "past exp + ExpiredGrace")

	// B goes away (its records are written on Close); the IdP comes back
	// with the old key removed: A reconciles what B accepted.
	require.NoError(t, b.Close())
	idp.Rotate()
	idp.RetireOldKeys()
	idp.SetDown(false)
	require.NoError(t, a.Refresh(ctx))
	mu.Lock()
	defer mu.Unlock()
	byHash := map[string]authfallback.ReconcileEvent{}
	for _, ev := range findings {
		byHash[ev.TokenHash] = ev
	}
	ev, ok := byHash[hashOf(fresh)]
	require.True(t, ok, "B's degraded acceptance reconciled by A: %+v", findings)
	assert.Equal(t, authfallback.FindingKeyRemoved, ev.Finding)
	assert.Equal(t, "bob", ev.Subject)
	assert.Equal(t, 1, ev.Accepted)
	ev, ok = byHash[hashOf(tok)]
	require.True(t, ok, "the grace uses are reconciled too")
	assert.Equal(t, 3, ev.Accepted)
	assert.Equal(t, authfallback.ReasonExpiredGrace, ev.Reason)
}
