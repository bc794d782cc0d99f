package authfallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/internal/httpx"
)

// drill is a service wired the way issue 4 describes: a Verifier against
// an authtest IdP (served in-process, so a synctest bubble's clock runs),
// an offline issuer and its exchange endpoint, a polled revocation list,
// and the hooks recorded in order.
type drill struct {
	idp     *authtest.Server
	rev     *revServer
	list    *RevocationList
	offline *OfflineIssuer
	v       *Verifier
	mux     *http.ServeMux
	audit   *lockedBuf

	mu     sync.Mutex
	events []string // "revocation:<sub|jti>", "reconcile:<finding>:<sub>:<reason>", "exit"
	recs   []ReconcileEvent
}

func (d *drill) note(s string) { d.mu.Lock(); d.events = append(d.events, s); d.mu.Unlock() }

func (d *drill) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.events...)
}

// newDrill must run inside the bubble; idp is created outside it (its
// server goroutines must not belong to the bubble).
func newDrill(t *testing.T, idp *authtest.Server, mod func(*Config)) *drill {
	d := &drill{idp: idp, rev: &revServer{doc: `{"jti":[],"sub":{}}`}, audit: &lockedBuf{}}
	var err error
	d.list, err = NewRevocationList(RevocationListConfig{
		URL:        "https://idp.test/revocations",
		HTTPClient: &http.Client{Transport: revRoundTripper{d.rev}},
		// Far longer than the drill: only reconciliation refreshes it.
		RefreshInterval: 24 * time.Hour,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.list.Close() })
	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	d.offline, err = NewOfflineIssuer(OfflineConfig{
		Issuer: "https://api.test/offline", Audience: []string{idp.Audience()}, Key: key,
		TTL: 10 * time.Minute, AllowedScopes: []string{"orders:read"},
		AuditLog: slog.New(slog.NewJSONHandler(d.audit, nil)),
	})
	require.NoError(t, err)
	cfg := Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		HTTPClient:  &http.Client{Transport: idp.InProcessTransport()},
		Policy:      Policy{AllowedScopes: []string{"orders:read"}},
		Offline:     d.offline,
		Revocations: d.list,
		AuditLog:    slog.New(slog.NewJSONHandler(d.audit, nil)),
		OnRevocation: func(ev RevocationEvent) {
			d.note("revocation:" + ev.Subject + ev.ID)
		},
		OnReconcile: func(ev ReconcileEvent) {
			d.note("reconcile:" + ev.Finding + ":" + ev.Subject + ":" + ev.Reason)
			d.mu.Lock()
			d.recs = append(d.recs, ev)
			d.mu.Unlock()
		},
		OnFallbackExit: func(FallbackEvent) { d.note("exit") },
	}
	if mod != nil {
		mod(&cfg)
	}
	d.v, err = New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.v.Close() })

	d.mux = http.NewServeMux()
	d.mux.Handle("POST /token/offline", d.v.Handler(d.offline.ExchangeHandler()))
	d.mux.Handle("/orders", d.v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ := FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(res)
	})))
	return d
}

// get calls /orders with token and returns the response and the Result
// the handler saw (nil if refused).
func (d *drill) get(t *testing.T, token string) (*httptest.ResponseRecorder, *Result) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/orders", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	d.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return rec, nil
	}
	var res Result
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
	return rec, &res
}

// exchange posts to the exchange endpoint with the primary token.
func (d *drill) exchange(t *testing.T, primary, scope string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/token/offline", strings.NewReader(url.Values{"scope": {scope}}.Encode()))
	req.Header.Set("Authorization", "Bearer "+primary)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	d.mux.ServeHTTP(rec, req)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, body.AccessToken
}

// TestDrill runs issue 4's outage drill on a fake clock: the IdP goes
// down, tokens are verified degraded and narrowed, offline tokens are
// minted over the exchange endpoint and accepted, a token expires into
// the grace window (accepted once, then refused), MaxOfflineDuration
// passes (fail closed), and the IdP returns with a revocation of a subject
// used during the outage, which OnReconcile reports.
func TestDrill(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	synctest.Test(t, func(t *testing.T) {
		d := newDrill(t, idp, nil)
		start := time.Now()

		// Normal operation: nothing degraded, nothing narrowed.
		alice := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read orders:write", "exp": start.Add(8 * time.Minute).Unix()})
		bob := idp.Issue(jwt.MapClaims{"sub": "bob", "scope": "orders:read orders:write"})
		// carol's token was never presented before the outage.
		carol := idp.Issue(jwt.MapClaims{"sub": "carol", "scope": "orders:read", "exp": start.Add(8 * time.Minute).Unix()})
		rec, res := d.get(t, alice)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		assert.False(t, res.Degraded)
		assert.Equal(t, []string{"orders:read", "orders:write"}, res.Scopes)
		_, res = d.get(t, bob)
		require.NotNil(t, res)
		assert.Empty(t, rec.Header().Get(httpx.HeaderDegraded))

		// The IdP goes down; the scheduled refresh fails: fallback mode.
		idp.SetDown(true)
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		st := d.v.Status()
		require.True(t, st.Fallback)
		assert.Equal(t, start.Add(35*time.Minute), st.FallbackDeadline, "30 min from the refresh that was due")

		// Degraded and narrowed to AllowedScopes.
		rec, res = d.get(t, bob)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		assert.True(t, res.Degraded)
		assert.Equal(t, ReasonJWKSUnreachable, res.Reason)
		assert.Equal(t, []string{"orders:read"}, res.Scopes)
		assert.Equal(t, []string{"orders:write"}, res.RemovedScopes)
		assert.Equal(t, ReasonJWKSUnreachable, rec.Header().Get(httpx.HeaderDegraded))

		// An offline token, minted over the exchange endpoint by bob's
		// degraded token, and accepted.
		code, offlineTok := d.exchange(t, bob, "orders:read orders:write")
		require.Equal(t, http.StatusOK, code)
		rec, res = d.get(t, offlineTok)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		assert.Equal(t, ReasonOfflineToken, res.Reason)
		assert.Equal(t, "bob", res.Subject)
		assert.Equal(t, []string{"orders:read"}, res.Scopes)
		assert.Equal(t, ReasonOfflineToken, rec.Header().Get(httpx.HeaderDegraded))

		// alice's token expires during the outage: accepted within the
		// grace window, on every request.
		time.Sleep(3*time.Minute + 30*time.Second) // start+8m31s
		rec, res = d.get(t, alice)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		assert.Equal(t, ReasonExpiredGrace, res.Reason)
		assert.Equal(t, []string{"orders:read"}, res.Scopes, "grace is narrowed too")
		rec, _ = d.get(t, alice)
		assert.Equal(t, http.StatusOK, rec.Code, "grace is a window, not one request")
		// carol's token expired too, but was never seen valid: no grace.
		rec, _ = d.get(t, carol)
		assert.Equal(t, http.StatusUnauthorized, rec.Code)

		// MaxOfflineDuration (30 min from the due refresh, start+5m)
		// passes: degraded acceptance stops, 503 with Retry-After.
		time.Sleep(start.Add(35*time.Minute - time.Second).Sub(time.Now()))
		rec, _ = d.get(t, bob)
		require.Equal(t, http.StatusOK, rec.Code, "still inside the window")
		time.Sleep(2 * time.Second)
		rec, _ = d.get(t, bob)
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.NotEmpty(t, rec.Header().Get("Retry-After"))
		assert.Contains(t, rec.Body.String(), ProblemUnavailable)
		code, _ = d.exchange(t, bob, "orders:read")
		assert.Equal(t, http.StatusServiceUnavailable, code, "no offline token past the window either")
		_, err := d.v.Verify(context.Background(), bob)
		assert.ErrorIs(t, err, ErrFallbackExpired)

		// The IdP returns; bob was revoked meanwhile. Reconciliation
		// refreshes the revocations first, then reports bob's tokens
		// accepted during the outage (his IdP token and his offline
		// token); alice (grace) was not revoked.
		d.rev.set(200, `{"jti":[],"sub":{"bob":"`+time.Now().UTC().Format(time.RFC3339)+`"}}`)
		idp.SetDown(false)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		st = d.v.Status()
		require.False(t, st.Fallback, "the IdP is back")
		assert.Zero(t, st.DegradedRecords, "reconciled")
		ev := d.seen()
		require.Contains(t, ev, "exit")
		assert.Contains(t, ev, "revocation:bob")
		assert.ElementsMatch(t, []string{
			"reconcile:" + RevokedSubject + ":bob:" + ReasonJWKSUnreachable,
			"reconcile:" + RevokedSubject + ":bob:" + ReasonOfflineToken,
		}, filterPrefix(ev, "reconcile:"))
		assert.Less(t, indexOf(ev, "revocation:bob"), indexOf(ev, filterPrefix(ev, "reconcile:")[0]),
			"revocations are refreshed before the re-check")
		for _, r := range d.recs {
			assert.NotEmpty(t, r.TokenHash)
			assert.GreaterOrEqual(t, r.Accepted, 1)
			assert.False(t, r.FirstAccepted.After(r.LastAccepted))
		}

		// bob is refused now, alice's new token is fine and not degraded.
		rec, _ = d.get(t, bob)
		assert.Equal(t, http.StatusUnauthorized, rec.Code)
		_, res = d.get(t, idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read orders:write"}))
		require.NotNil(t, res)
		assert.False(t, res.Degraded)
		assert.Len(t, res.Scopes, 2)

		// The audit trail has every step, never a token.
		log := d.audit.String()
		for _, s := range []string{"fallback mode enter", "degraded acceptance", "offline token issued",
			"expired grace used", "fallback mode exit", "reconcile finding", "reconcile done", "revoked token refused"} {
			assert.Contains(t, log, s)
		}
		for _, tok := range []string{alice, bob, carol, offlineTok} {
			assert.NotContains(t, log, tok)
		}
	})
}

func filterPrefix(list []string, prefix string) []string {
	var out []string
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}
