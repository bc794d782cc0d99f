package authfallback_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/internal/caller"
)

// api is a protected service on a real httptest.Server; every request it
// lets through is answered 200 with what the inner handler saw.
type api struct {
	srv *httptest.Server
}

type seen struct {
	Issuer   string   `json:"issuer"`
	Subject  string   `json:"subject"`
	Scopes   []string `json:"scopes"`
	Degraded bool     `json:"degraded"`
	Reason   string   `json:"reason"`
	CallerID string   `json:"caller_id"`
}

func newAPI(t *testing.T, mw func(http.Handler) http.Handler) *api {
	t.Helper()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, ok := authfallback.FromContext(r.Context())
		if !ok {
			http.Error(w, "no result", http.StatusInternalServerError)
			return
		}
		c := caller.FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(seen{
			Issuer: res.Issuer, Subject: res.Subject, Scopes: res.Scopes, Degraded: res.Degraded,
			Reason: res.Reason, CallerID: c.ID(),
		})
	})
	srv := httptest.NewServer(mw(next))
	t.Cleanup(srv.Close)
	return &api{srv: srv}
}

type reply struct {
	status int
	header http.Header
	body   string
	seen   seen
}

// do sends one request to path with the Authorization header auth (and a
// DPoP header when proof is set).
func (a *api) do(t *testing.T, method, path, auth, proof string) reply {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, nil)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := a.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	rp := reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(b, &rp.seen))
	}
	return rp
}

func (a *api) bearer(t *testing.T, tok string) reply {
	return a.do(t, http.MethodGet, "/orders", "Bearer "+tok, "")
}

func baseConfig(idp *authtest.Server) authfallback.Config {
	return authfallback.Config{
		Issuer:       idp.Issuer(),
		Audience:     []string{idp.Audience()},
		JWKSURLs:     []string{idp.JWKSURL()},
		FetchTimeout: 2 * time.Second,
		AuditLog:     discard(),
	}
}

// --- 1. several issuers -------------------------------------------------

func TestIssuersE2E_OneIssuerDownTheOtherNormal(t *testing.T) {
	a, b := newIdP(t, "RS256"), newIdP(t, "ES256")
	var mu sync.Mutex
	var entered []string
	hook := func(ev authfallback.FallbackEvent) {
		mu.Lock()
		entered = append(entered, ev.Issuer)
		mu.Unlock()
	}
	ca, cb := baseConfig(a), baseConfig(b)
	ca.OnFallbackEnter, cb.OnFallbackEnter = hook, hook
	ca.Policy.AllowedScopes = []string{"read"}
	cb.Policy.AllowedScopes = []string{"read"}
	is, err := authfallback.NewIssuers(ca, cb)
	require.NoError(t, err)
	t.Cleanup(func() { _ = is.Close() })
	srv := newAPI(t, is.Handler)

	ta := a.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write"})
	tb := b.Issue(jwt.MapClaims{"sub": "bob", "scope": "read write"})
	for _, tc := range []struct {
		tok, iss, sub string
	}{{ta, a.Issuer(), "alice"}, {tb, b.Issuer(), "bob"}} {
		r := srv.bearer(t, tc.tok)
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.Equal(t, tc.iss, r.seen.Issuer)
		assert.Equal(t, tc.sub, r.seen.Subject)
		assert.False(t, r.seen.Degraded)
		assert.Equal(t, []string{"read", "write"}, r.seen.Scopes)
		assert.Equal(t, caller.ID(tc.iss, tc.sub), r.seen.CallerID)
	}

	// Vendor B goes dark.
	b.SetDown(true)
	require.Error(t, is.Verifier(b.Issuer()).Refresh(context.Background()))

	rb := srv.bearer(t, tb)
	require.Equal(t, http.StatusOK, rb.status, rb.body)
	assert.True(t, rb.seen.Degraded)
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, rb.seen.Reason)
	assert.Equal(t, []string{"read"}, rb.seen.Scopes, "B's policy narrows B's tokens")
	assert.Equal(t, authfallback.ReasonJWKSUnreachable, rb.header.Get("Holdfast-Degraded"))

	ra := srv.bearer(t, ta)
	require.Equal(t, http.StatusOK, ra.status, ra.body)
	assert.False(t, ra.seen.Degraded, "A stays normal while B is down")
	assert.Equal(t, []string{"read", "write"}, ra.seen.Scopes)
	assert.Empty(t, ra.header.Get("Holdfast-Degraded"))
	// A fresh A token (not cached) too.
	ra2 := srv.bearer(t, a.Issue(jwt.MapClaims{"sub": "alice2"}))
	require.Equal(t, http.StatusOK, ra2.status)
	assert.False(t, ra2.seen.Degraded)

	st := is.Status()
	require.Len(t, st, 2)
	assert.Equal(t, a.Issuer(), st[0].Issuer)
	assert.False(t, st[0].Fallback)
	assert.Equal(t, b.Issuer(), st[1].Issuer)
	assert.True(t, st[1].Fallback)
	mu.Lock()
	assert.Equal(t, []string{b.Issuer()}, entered, "the hook says which issuer")
	mu.Unlock()

	// An issuer nobody configured.
	c := newIdP(t, "RS256")
	rc := srv.bearer(t, c.Issue(nil))
	assert.Equal(t, http.StatusUnauthorized, rc.status)
	assert.Contains(t, rc.header.Get("Content-Type"), "application/problem+json")
}

// kidServer serves idp's key set with every kid replaced by kid.
func kidServer(t *testing.T, idp *authtest.Server, kid string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var doc map[string][]map[string]any
		require.NoError(t, json.Unmarshal(idp.JWKS(), &doc))
		for _, k := range doc["keys"] {
			k["kid"] = kid
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestIssuersE2E_KeyOfOneIssuerNeverVerifiesAnother(t *testing.T) {
	a, b := newIdP(t, "RS256"), newIdP(t, "RS256")
	kid := a.KeyID()
	ca, cb := baseConfig(a), baseConfig(b)
	// B publishes its own key under the very kid A uses.
	cb.JWKSURLs = []string{kidServer(t, b, kid)}
	is, err := authfallback.NewIssuers(ca, cb)
	require.NoError(t, err)
	t.Cleanup(func() { _ = is.Close() })
	srv := newAPI(t, is.Handler)

	// Controls: each issuer's own tokens pass.
	require.Equal(t, http.StatusOK, srv.bearer(t, a.Issue(nil)).status)
	rb := srv.bearer(t, b.IssueWithHeader(map[string]any{"kid": kid}, nil))
	require.Equal(t, http.StatusOK, rb.status, rb.body)
	assert.Equal(t, b.Issuer(), rb.seen.Issuer)

	// A's key, A's kid (also a kid of B), claiming issuer B.
	forged := a.Issue(jwt.MapClaims{"iss": b.Issuer(), "sub": "admin"})
	r := srv.bearer(t, forged)
	assert.Equal(t, http.StatusUnauthorized, r.status, r.body)
	_, err = is.Verify(context.Background(), forged)
	assert.ErrorIs(t, err, authfallback.ErrInvalidToken)
	// And once A has verified (and cached) a token, the same bytes with
	// another iss are another token.
	_, err = is.Verify(context.Background(), a.Issue(jwt.MapClaims{"iss": b.Issuer()}))
	assert.ErrorIs(t, err, authfallback.ErrInvalidToken)
}

func TestNewIssuersRefusesDuplicates(t *testing.T) {
	a := newIdP(t, "RS256")
	_, err := authfallback.NewIssuers(baseConfig(a), baseConfig(a))
	assert.Error(t, err)
	_, err = authfallback.NewIssuers()
	assert.Error(t, err)
	c1, c2 := baseConfig(a), baseConfig(newIdP(t, "RS256"))
	intro := &authfallback.IntrospectionConfig{URL: a.IntrospectionURL(), ClientID: "x", ClientSecret: "y"}
	c1.Introspection, c2.Introspection = intro, intro
	_, err = authfallback.NewIssuers(c1, c2)
	assert.Error(t, err, "an opaque token must go to one introspection endpoint only")
}

// --- 2. discovery -------------------------------------------------------

func TestDiscoveryE2E_RestartDuringOutage(t *testing.T) {
	idp := newIdP(t, "ES256")
	dir := t.TempDir()
	cfg := authfallback.Config{
		Issuer:       idp.Issuer(),
		Audience:     []string{idp.Audience()},
		Discovery:    true,
		CacheFile:    filepath.Join(dir, "keys.json"),
		FetchTimeout: time.Second,
		AuditLog:     discard(),
	}
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	tok := idp.Issue(nil)
	res, err := v.Verify(context.Background(), tok)
	require.NoError(t, err, "the jwks_uri came from the discovery document")
	assert.False(t, res.Degraded)
	doc, ok := v.Discovery()
	require.True(t, ok)
	assert.Equal(t, idp.JWKSURL(), doc.JWKSURI)
	assert.Equal(t, idp.JWKSURL(), v.Status().Source)
	require.NoError(t, v.Close())
	_, err = os.Stat(cfg.CacheFile + authfallback.DiscoveryFileSuffix)
	require.NoError(t, err, "the discovery document is kept beside the keys")

	// The IdP goes dark, the service restarts with the issuer URL only.
	idp.SetDown(true)
	v2, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v2.Close() })
	srv := newAPI(t, v2.Handler)
	r := srv.bearer(t, tok)
	require.Equal(t, http.StatusOK, r.status, "verifies at once: %s", r.body)
	r = srv.bearer(t, idp.Issue(jwt.MapClaims{"sub": "new"}))
	require.Equal(t, http.StatusOK, r.status, r.body)
	doc2, ok := v2.Discovery()
	require.True(t, ok, "the discovery document was loaded from its file")
	assert.Equal(t, doc.JWKSURI, doc2.JWKSURI)

	// Once refreshes fail, it is fallback mode, as with explicit URLs.
	require.Error(t, v2.Refresh(context.Background()))
	r = srv.bearer(t, tok)
	require.Equal(t, http.StatusOK, r.status)
	assert.True(t, r.seen.Degraded)

	// The IdP is back: the keys come through the discovered URL again.
	idp.SetDown(false)
	require.NoError(t, v2.Refresh(context.Background()))
	assert.False(t, v2.Status().Fallback)
}

// discoveryServer serves a discovery document for issuer pointing at jwks.
func discoveryServer(t *testing.T, issuer func(self string) string, jwks string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != authfallback.DiscoveryPath {
			http.NotFound(w, r)
			return
		}
		self := "http://" + r.Host
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": issuer(self), "jwks_uri": jwks})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestDiscoveryE2E_IssuerMustMatchExactly(t *testing.T) {
	idp := newIdP(t, "RS256")
	audit := &syncBuffer{}
	// The document claims the IdP's issuer, but is served by another
	// origin for its own (configured) issuer.
	disc := discoveryServer(t, func(string) string { return idp.Issuer() }, idp.JWKSURL())
	v, err := authfallback.New(authfallback.Config{
		Issuer: disc.URL, Audience: []string{idp.Audience()}, Discovery: true,
		FetchTimeout: time.Second, AuditLog: slog.New(slog.NewJSONHandler(audit, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	_, err = v.Verify(context.Background(), idp.Issue(jwt.MapClaims{"iss": disc.URL}))
	assert.ErrorIs(t, err, authfallback.ErrNoKeys)
	_, ok := v.Discovery()
	assert.False(t, ok)
	assert.Contains(t, audit.String(), "issuer does not equal")

	// A trailing slash is a different issuer.
	disc2 := discoveryServer(t, func(self string) string { return self + "/" }, idp.JWKSURL())
	v2, err := authfallback.New(authfallback.Config{
		Issuer: disc2.URL, Audience: []string{idp.Audience()}, Discovery: true, AuditLog: discard(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v2.Close() })
	_, ok = v2.Discovery()
	assert.False(t, ok)

	// Not https and not loopback: refused by New.
	_, err = authfallback.New(authfallback.Config{Issuer: "http://idp.example.com/", Audience: []string{"x"}, Discovery: true})
	assert.Error(t, err)
}

func TestDiscoveryE2E_ExplicitURLsWinAlternatesApply(t *testing.T) {
	idp := newIdP(t, "RS256")
	other := newIdP(t, "RS256")
	// The document points at another key set; the explicit URL wins.
	disc := discoveryServer(t, func(self string) string { return self }, other.JWKSURL())
	cfg := authfallback.Config{
		Issuer: disc.URL, Audience: []string{idp.Audience()}, Discovery: true,
		JWKSURLs: []string{idp.JWKSURL()}, FetchTimeout: time.Second, AuditLog: discard(),
	}
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	_, err = v.Verify(context.Background(), idp.Issue(jwt.MapClaims{"iss": disc.URL}))
	require.NoError(t, err)
	assert.Equal(t, idp.JWKSURL(), v.Status().Source)

	// The explicit URL fails: the discovered one is the alternate.
	idp.SetDown(true)
	require.NoError(t, v.Refresh(context.Background()))
	assert.Equal(t, other.JWKSURL(), v.Status().Source)
	_, err = v.Verify(context.Background(), other.Issue(jwt.MapClaims{"iss": disc.URL}))
	require.NoError(t, err)
}

// --- 3. introspection ---------------------------------------------------

func introConfig(idp *authtest.Server, mod func(*authfallback.IntrospectionConfig)) *authfallback.IntrospectionConfig {
	c := &authfallback.IntrospectionConfig{
		URL: idp.IntrospectionURL(), ClientID: idp.ClientID(), ClientSecret: idp.ClientSecret(),
		Timeout: time.Second, ProbeInterval: -1,
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestIntrospectionE2E_OutageDegradedThenReconciled(t *testing.T) {
	idp := newIdP(t, "RS256")
	found := make(chan authfallback.ReconcileEvent, 10)
	cfg := baseConfig(idp)
	cfg.Policy.AllowedScopes = []string{"read"}
	entered := make(chan authfallback.FallbackEvent, 10)
	cfg.Introspection = introConfig(idp, func(c *authfallback.IntrospectionConfig) {
		c.MaxCachedTokens = -1
		c.OnOutageEnter = func(ev authfallback.FallbackEvent) { entered <- ev }
	})
	cfg.OnReconcile = func(ev authfallback.ReconcileEvent) { found <- ev }
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv := newAPI(t, v.Handler)

	opaque := idp.IssueOpaque(map[string]any{"sub": "carol", "scope": "read write"})
	never := idp.IssueOpaque(map[string]any{"sub": "dave"})
	other := idp.IssueOpaque(map[string]any{"sub": "erin"})

	// Accepted, normally; a JWT through the same Handler too.
	r := srv.bearer(t, opaque)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, "carol", r.seen.Subject)
	assert.Equal(t, idp.Issuer(), r.seen.Issuer)
	assert.Equal(t, []string{"read", "write"}, r.seen.Scopes)
	assert.False(t, r.seen.Degraded)
	require.Equal(t, http.StatusOK, srv.bearer(t, idp.Issue(nil)).status)
	require.Equal(t, http.StatusOK, srv.bearer(t, other).status)
	hits := idp.IntrospectionHits()

	// The introspection endpoint goes dark.
	idp.SetDown(true)
	r = srv.bearer(t, opaque)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.True(t, r.seen.Degraded)
	assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, r.seen.Reason)
	assert.Equal(t, []string{"read"}, r.seen.Scopes, "narrowed by the Policy")
	assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, r.header.Get("Holdfast-Degraded"))
	require.Equal(t, http.StatusOK, srv.bearer(t, opaque).status)

	// Never seen before the outage: not accepted.
	r = srv.bearer(t, never)
	assert.Equal(t, http.StatusServiceUnavailable, r.status)
	assert.Contains(t, r.body, "introspection endpoint cannot be reached")
	assert.NotEmpty(t, r.header.Get("Retry-After"))
	assert.Contains(t, r.header.Get("Content-Type"), "application/problem+json")
	st := v.Status().Introspection
	require.NotNil(t, st)
	assert.True(t, st.Outage)
	require.Len(t, entered, 1)
	ev := <-entered
	assert.Equal(t, idp.Issuer(), ev.Issuer)
	assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, ev.Reason)
	assert.Error(t, ev.Err)
	assert.False(t, v.Status().Fallback, "the key set is not in fallback mode")
	assert.Equal(t, 1, st.DegradedRecords)

	// Revoked at the server while it is unreachable from here.
	idp.Revoke(opaque)
	idp.SetDown(false)
	r = srv.bearer(t, other)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.False(t, r.seen.Degraded)
	assert.Greater(t, idp.IntrospectionHits(), hits)

	select {
	case ev := <-found:
		assert.Equal(t, authfallback.FindingInactive, ev.Finding)
		assert.Equal(t, "carol", ev.Subject)
		assert.Equal(t, idp.Issuer(), ev.Issuer)
		assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, ev.Reason)
		assert.Equal(t, 2, ev.Accepted)
		assert.Equal(t, []string{"read"}, ev.Scopes)
		assert.NotContains(t, ev.TokenHash, opaque)
	case <-time.After(5 * time.Second):
		t.Fatal("no reconcile finding for the revoked token")
	}
	select {
	case ev := <-found:
		t.Fatalf("unexpected finding %+v", ev)
	default:
	}
	r = srv.bearer(t, opaque)
	assert.Equal(t, http.StatusUnauthorized, r.status, "the revocation is seen")
	assert.Contains(t, r.body, "not active")
	assert.False(t, v.Status().Introspection.Outage)
}

func TestIntrospectionE2E_CacheAndChecks(t *testing.T) {
	idp := newIdP(t, "RS256")
	cfg := baseConfig(idp)
	cfg.Introspection = introConfig(idp, nil)
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv := newAPI(t, v.Handler)

	tok := idp.IssueOpaque(nil)
	before := idp.IntrospectionHits()
	for range 3 {
		require.Equal(t, http.StatusOK, srv.bearer(t, tok).status)
	}
	assert.Equal(t, before+1, idp.IntrospectionHits(), "positive answers are cached")
	assert.Equal(t, 1, v.Status().Introspection.CachedTokens)

	for name, claims := range map[string]map[string]any{
		"other audience":  {"aud": "someone-else"},
		"no audience":     {"aud": nil},
		"other issuer":    {"iss": "https://evil.example/"},
		"no exp":          {"exp": nil},
		"expired":         {"exp": time.Now().Add(-time.Minute).Unix()},
		"refresh token":   {"token_type": "refresh_token"},
		"not yet valid":   {"nbf": time.Now().Add(time.Hour).Unix()},
		"no subject":      {"sub": nil},
		"numeric subject": {"sub": 42},
	} {
		t.Run(name, func(t *testing.T) {
			r := srv.bearer(t, idp.IssueOpaque(claims))
			assert.Equal(t, http.StatusUnauthorized, r.status)
			assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_token"`)
		})
	}
	t.Run("unknown token", func(t *testing.T) {
		assert.Equal(t, http.StatusUnauthorized, srv.bearer(t, "never-issued").status)
	})
	t.Run("malformed answer is an outage", func(t *testing.T) {
		idp.SetIntrospectionAnswer([]byte(`<html>502</html>`))
		defer idp.SetIntrospectionAnswer(nil)
		r := srv.bearer(t, idp.IssueOpaque(nil))
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Contains(t, r.header.Get("Content-Type"), "application/problem+json")
	})
}

// An issuer configured with introspection alone (no JWKS, cache file or
// discovery) checks its JWTs there too, rather than answering 503 for want
// of keys; another issuer's JWT is never sent to its endpoint.
func TestIntrospectionE2E_IntrospectionOnlyIssuerChecksJWTs(t *testing.T) {
	idp := newIdP(t, "RS256")
	v, err := authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, AuditLog: discard(),
		Introspection: introConfig(idp, nil),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv := newAPI(t, v.Handler)

	tok := idp.Issue(jwt.MapClaims{"sub": "hana", "scope": "read"})
	before := idp.IntrospectionHits()
	r := srv.bearer(t, tok)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, "hana", r.seen.Subject)
	assert.Equal(t, before+1, idp.IntrospectionHits(), "the JWT was introspected")

	revoked := idp.Issue(jwt.MapClaims{"sub": "ivan"})
	idp.Revoke(revoked)
	r = srv.bearer(t, revoked)
	assert.Equal(t, http.StatusUnauthorized, r.status, "inactive by introspection: %s", r.body)

	other := newIdP(t, "RS256")
	before = idp.IntrospectionHits()
	r = srv.bearer(t, other.Issue(jwt.MapClaims{"sub": "mallory"}))
	assert.Equal(t, http.StatusUnauthorized, r.status, r.body)
	assert.Equal(t, before, idp.IntrospectionHits(), "another issuer's JWT is not sent to this one's endpoint")
	assert.Equal(t, int64(0), other.IntrospectionHits())

	forged := idp.Issue(jwt.MapClaims{"sub": "hana"})
	parts := strings.Split(forged, ".")
	r = srv.bearer(t, parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2])))
	assert.Equal(t, http.StatusUnauthorized, r.status, "a token the IdP did not issue is inactive")

	// With a key source, JWTs are verified locally: no introspection.
	cfg := baseConfig(idp)
	cfg.Introspection = introConfig(idp, nil)
	local, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = local.Close() })
	lsrv := newAPI(t, local.Handler)
	before = idp.IntrospectionHits()
	require.Equal(t, http.StatusOK, lsrv.bearer(t, idp.Issue(jwt.MapClaims{"sub": "jo"})).status)
	assert.Equal(t, before, idp.IntrospectionHits())
}

func TestIntrospectionE2E_ClientAuthentication(t *testing.T) {
	idp := newIdP(t, "RS256")
	for _, post := range []bool{false, true} {
		cfg := baseConfig(idp)
		cfg.Introspection = introConfig(idp, func(c *authfallback.IntrospectionConfig) { c.ClientSecretPost = post })
		v, err := authfallback.New(cfg)
		require.NoError(t, err)
		_, err = v.Verify(context.Background(), idp.IssueOpaque(nil))
		assert.NoError(t, err, "post=%v", post)
		_ = v.Close()
	}
	cfg := baseConfig(idp)
	cfg.Introspection = introConfig(idp, func(c *authfallback.IntrospectionConfig) { c.ClientSecret = "wrong" })
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	_, err = v.Verify(context.Background(), idp.IssueOpaque(nil))
	assert.ErrorIs(t, err, authfallback.ErrIntrospectionUnavailable)
}

// --- 4. DPoP ------------------------------------------------------------

func dpopAuth(tok string) string { return "DPoP " + tok }

func TestDPoPE2E(t *testing.T) {
	idp := newIdP(t, "RS256")
	cfg := baseConfig(idp)
	cfg.Policy.AllowedScopes = []string{"read"}
	cfg.Introspection = introConfig(idp, nil)
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv := newAPI(t, v.Handler)
	url := srv.srv.URL + "/orders"

	key, thief := authtest.NewDPoPKey("ES256"), authtest.NewDPoPKey("ES256")
	tok := idp.Issue(jwt.MapClaims{"cnf": key.Confirmation(), "scope": "read"})

	wantDPoPError := func(t *testing.T, r reply, code string) {
		t.Helper()
		assert.Equal(t, http.StatusUnauthorized, r.status, r.body)
		wa := r.header.Get("WWW-Authenticate")
		assert.True(t, strings.HasPrefix(wa, "DPoP "), wa)
		assert.Contains(t, wa, `error="`+code+`"`)
		assert.Contains(t, wa, `algs="ES256 EdDSA RS256 PS256"`)
		assert.Contains(t, r.header.Get("Content-Type"), "application/problem+json")
		var p struct{ Type, Detail string }
		require.NoError(t, json.Unmarshal([]byte(r.body), &p))
		if code == "invalid_dpop_proof" {
			assert.Contains(t, p.Type, authfallback.ProblemInvalidDPoPProof)
			assert.Contains(t, p.Detail, "the DPoP proof is invalid: ")
		}
		assert.NotContains(t, r.body, tok)
	}

	t.Run("refused as a bearer token", func(t *testing.T) {
		wantDPoPError(t, srv.bearer(t, tok), "invalid_token")
	})
	t.Run("refused without a proof", func(t *testing.T) {
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(tok), ""), "invalid_dpop_proof")
	})
	t.Run("accepted with a fresh proof, refused when replayed", func(t *testing.T) {
		proof := key.Proof("GET", url, tok)
		r := srv.do(t, "GET", "/orders", dpopAuth(tok), proof)
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.False(t, r.seen.Degraded)
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(tok), proof), "invalid_dpop_proof")
		// The next fresh proof passes again.
		require.Equal(t, http.StatusOK, srv.do(t, "GET", "/orders", dpopAuth(tok), key.Proof("GET", url, tok)).status)
	})
	t.Run("refused with another key's proof", func(t *testing.T) {
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(tok), thief.Proof("GET", url, tok)), "invalid_dpop_proof")
	})
	bad := map[string]string{
		"other method":  key.Proof("POST", url, tok),
		"other url":     key.Proof("GET", srv.srv.URL+"/admin", tok),
		"other token":   key.Proof("GET", url, idp.Issue(nil)),
		"no ath":        key.ProofWith(nil, jwt.MapClaims{"htm": "GET", "htu": url}, ""),
		"old":           key.ProofWith(nil, jwt.MapClaims{"htm": "GET", "htu": url, "iat": time.Now().Add(-10 * time.Minute).Unix()}, tok),
		"future":        key.ProofWith(nil, jwt.MapClaims{"htm": "GET", "htu": url, "iat": time.Now().Add(10 * time.Minute).Unix()}, tok),
		"no jti":        key.ProofWith(nil, jwt.MapClaims{"htm": "GET", "htu": url, "jti": nil}, tok),
		"wrong typ":     key.ProofWith(map[string]any{"typ": "JWT"}, jwt.MapClaims{"htm": "GET", "htu": url}, tok),
		"private jwk":   key.ProofWith(map[string]any{"jwk": key.PrivateJWK()}, jwt.MapClaims{"htm": "GET", "htu": url}, tok),
		"no jwk":        key.ProofWith(map[string]any{"jwk": nil}, jwt.MapClaims{"htm": "GET", "htu": url}, tok),
		"not a JWT":     "garbage",
		"thief's jwk":   thief.ProofWith(map[string]any{"jwk": nil}, jwt.MapClaims{"htm": "GET", "htu": url}, tok),
		"the token":     tok,
		"query ignored": "", // placeholder, checked below
	}
	delete(bad, "query ignored")
	for name, proof := range bad {
		t.Run("refused: "+name, func(t *testing.T) {
			wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(tok), proof), "invalid_dpop_proof")
		})
	}
	t.Run("two DPoP headers", func(t *testing.T) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", dpopAuth(tok))
		req.Header.Add("DPoP", key.Proof("GET", url, tok))
		req.Header.Add("DPoP", key.Proof("GET", url, tok))
		resp, err := srv.srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})
	t.Run("query and fragment are ignored in htu", func(t *testing.T) {
		r := srv.do(t, "GET", "/orders?page=2", dpopAuth(tok), key.Proof("GET", url, tok))
		assert.Equal(t, http.StatusOK, r.status, r.body)
	})
	t.Run("an unbound token under the DPoP scheme", func(t *testing.T) {
		plain := idp.Issue(nil)
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(plain), key.Proof("GET", url, plain)), "invalid_token")
		assert.Equal(t, http.StatusOK, srv.bearer(t, plain).status)
	})
	t.Run("an introspected bound token", func(t *testing.T) {
		op := idp.IssueOpaque(map[string]any{"cnf": key.Confirmation()})
		wantDPoPError(t, srv.bearer(t, op), "invalid_token")
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(op), thief.Proof("GET", url, op)), "invalid_dpop_proof")
		assert.Equal(t, http.StatusOK, srv.do(t, "GET", "/orders", dpopAuth(op), key.Proof("GET", url, op)).status)
	})
	t.Run("binding holds in fallback mode", func(t *testing.T) {
		idp.SetDown(true)
		defer idp.SetDown(false)
		require.Error(t, v.Refresh(context.Background()))
		r := srv.do(t, "GET", "/orders", dpopAuth(tok), key.Proof("GET", url, tok))
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.True(t, r.seen.Degraded)
		wantDPoPError(t, srv.bearer(t, tok), "invalid_token")
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(tok), thief.Proof("GET", url, tok)), "invalid_dpop_proof")
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(tok), ""), "invalid_dpop_proof")
	})
	t.Run("an expired bound token under DPoP gets a DPoP challenge", func(t *testing.T) {
		old := idp.Issue(jwt.MapClaims{"cnf": key.Confirmation(), "exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
		wantDPoPError(t, srv.do(t, "GET", "/orders", dpopAuth(old), key.Proof("GET", url, old)), "invalid_token")
	})
}

func TestDPoPE2E_Issuers(t *testing.T) {
	a, b := newIdP(t, "RS256"), newIdP(t, "EdDSA")
	is, err := authfallback.NewIssuers(baseConfig(a), baseConfig(b))
	require.NoError(t, err)
	t.Cleanup(func() { _ = is.Close() })
	srv := newAPI(t, is.Handler)
	url := srv.srv.URL + "/x"
	key := authtest.NewDPoPKey("EdDSA")
	tok := b.Issue(jwt.MapClaims{"cnf": key.Confirmation()})
	assert.Equal(t, http.StatusUnauthorized, srv.do(t, "GET", "/x", dpopAuth(tok), "").status)
	r := srv.do(t, "GET", "/x", dpopAuth(tok), key.Proof("GET", url, tok))
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, b.Issuer(), r.seen.Issuer)
}

func TestDiscoveryE2E_IntrospectionEndpointFromDiscovery(t *testing.T) {
	idp := newIdP(t, "RS256")
	v, err := authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, Discovery: true, AuditLog: discard(),
		Introspection: &authfallback.IntrospectionConfig{ClientID: idp.ClientID(), ClientSecret: idp.ClientSecret()},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv := newAPI(t, v.Handler)
	r := srv.bearer(t, idp.IssueOpaque(map[string]any{"sub": "frank"}))
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, "frank", r.seen.Subject)
	r = srv.bearer(t, idp.Issue(jwt.MapClaims{"sub": "gina"}))
	require.Equal(t, http.StatusOK, r.status, r.body)
	doc, _ := v.Discovery()
	assert.Equal(t, idp.IntrospectionURL(), doc.IntrospectionEndpoint)

	_, err = authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		Introspection: &authfallback.IntrospectionConfig{ClientID: "a", ClientSecret: "b"},
	})
	assert.Error(t, err, "no introspection URL and no discovery")
}

func TestDPoPE2E_AuditAndVerifyRequest(t *testing.T) {
	idp := newIdP(t, "RS256")
	audit := &syncBuffer{}
	cfg := baseConfig(idp)
	cfg.AuditLog = slog.New(slog.NewJSONHandler(audit, nil))
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	key := authtest.NewDPoPKey("RS256")
	tok := idp.Issue(jwt.MapClaims{"cnf": key.Confirmation()})
	req := httptest.NewRequest("POST", "https://api.example.com/pay", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	_, err = v.VerifyRequest(req)
	assert.ErrorIs(t, err, authfallback.ErrDPoPBinding)
	assert.ErrorIs(t, err, authfallback.ErrInvalidToken)
	assert.Contains(t, audit.String(), "bound token refused")
	assert.NotContains(t, audit.String(), tok)

	req.Header.Set("Authorization", "DPoP "+tok)
	req.Header.Set("DPoP", key.Proof("POST", "https://api.example.com/pay", tok))
	res, err := v.VerifyRequest(req)
	require.NoError(t, err)
	assert.Equal(t, key.Thumbprint(), res.DPoPThumbprint())
}

func TestIntrospectionE2E_ConcurrentRequestsShareOneCall(t *testing.T) {
	idp := newIdP(t, "RS256")
	cfg := baseConfig(idp)
	cfg.Introspection = introConfig(idp, nil)
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	tok := idp.IssueOpaque(nil)
	idp.SetSlow(200 * time.Millisecond)
	defer idp.SetSlow(0)
	before := idp.IntrospectionHits()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := v.Verify(context.Background(), tok)
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Equal(t, before+1, idp.IntrospectionHits())
}

type failingReplayCache struct{}

func (failingReplayCache) Seen(context.Context, string, time.Time) (bool, error) {
	return false, io.ErrUnexpectedEOF
}

func TestDPoPE2E_ReplayCacheDownFailsClosed(t *testing.T) {
	idp := newIdP(t, "RS256")
	cfg := baseConfig(idp)
	cfg.DPoP.ReplayCache = failingReplayCache{}
	v, err := authfallback.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	srv := newAPI(t, v.Handler)
	key := authtest.NewDPoPKey("")
	tok := idp.Issue(jwt.MapClaims{"cnf": key.Confirmation()})
	r := srv.do(t, "GET", "/x", dpopAuth(tok), key.Proof("GET", srv.srv.URL+"/x", tok))
	assert.Equal(t, http.StatusServiceUnavailable, r.status)
	assert.Equal(t, "1", r.header.Get("Retry-After"))
	assert.Contains(t, r.body, "replay")
}

// Vendor A by discovery (JWTs), vendor B by introspection (opaque tokens)
// behind one Handler: B's introspection endpoint goes dark, A stays normal.
func TestIssuersE2E_JWTVendorAndIntrospectionVendor(t *testing.T) {
	a, b := newIdP(t, "ES256"), newIdP(t, "RS256")
	ca := authfallback.Config{Issuer: a.Issuer(), Audience: []string{"test-api"}, Discovery: true, AuditLog: discard()}
	cb := authfallback.Config{
		Issuer: b.Issuer(), Audience: []string{"test-api"}, AuditLog: discard(),
		Introspection: introConfig(b, func(c *authfallback.IntrospectionConfig) { c.MaxCachedTokens = -1 }),
	}
	cb.Policy.AllowedScopes = []string{"read"}
	is, err := authfallback.NewIssuers(ca, cb)
	require.NoError(t, err)
	t.Cleanup(func() { _ = is.Close() })
	srv := newAPI(t, is.Handler)

	ja := a.Issue(jwt.MapClaims{"sub": "alice", "scope": "read write"})
	ob := b.IssueOpaque(map[string]any{"sub": "bob", "scope": "read write"})
	for _, tok := range []string{ja, ob} {
		r := srv.bearer(t, tok)
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.False(t, r.seen.Degraded)
	}
	b.SetDown(true)
	r := srv.bearer(t, ob)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, b.Issuer(), r.seen.Issuer)
	assert.Equal(t, authfallback.ReasonIntrospectionUnreachable, r.seen.Reason)
	assert.Equal(t, []string{"read"}, r.seen.Scopes)
	r = srv.bearer(t, ja)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.False(t, r.seen.Degraded, "A is not touched by B's outage")
	assert.Equal(t, []string{"read", "write"}, r.seen.Scopes)
	// A JWT claiming B (which verifies no JWT) is refused.
	r = srv.bearer(t, a.Issue(jwt.MapClaims{"iss": b.Issuer()}))
	assert.NotEqual(t, http.StatusOK, r.status)
	st := is.Status()
	assert.Nil(t, st[0].Introspection)
	require.NotNil(t, st[1].Introspection)
	assert.True(t, st[1].Introspection.Outage)
}
