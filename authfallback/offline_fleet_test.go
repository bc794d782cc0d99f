package authfallback_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

const fleetOfflineIssuer = "https://api.test/offline"

// offlineReplica is a Verifier against idp trusting offline, served over
// real HTTP: /orders (protected) and, if exchange is set, /exchange.
type offlineReplica struct {
	v   *authfallback.Verifier
	srv *httptest.Server
}

func newOfflineReplica(t *testing.T, idp *authtest.Server, offline *authfallback.OfflineIssuer, exchange bool) *offlineReplica {
	t.Helper()
	v, err := authfallback.New(authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		HTTPClient: &http.Client{}, FetchTimeout: time.Second, RefreshInterval: time.Hour,
		AuditLog: slog.New(slog.DiscardHandler), Offline: offline,
		Policy: authfallback.Policy{AllowedScopes: []string{"orders:read"}},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = v.Close() })
	mux := http.NewServeMux()
	mux.Handle("/orders", v.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	if exchange {
		mux.Handle("/exchange", v.Handler(offline.ExchangeHandler()))
		mux.Handle("/offline/jwks", offline.JWKSHandler())
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &offlineReplica{v: v, srv: srv}
}

func (r *offlineReplica) do(t *testing.T, method, path, tok string) *http.Response {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(url.Values{"scope": {"orders:read"}}.Encode())
	}
	req, err := http.NewRequest(method, r.srv.URL+path, body)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func (r *offlineReplica) exchange(t *testing.T, primary string) string {
	t.Helper()
	resp := r.do(t, http.MethodPost, "/exchange", primary)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotEmpty(t, out.AccessToken)
	return out.AccessToken
}

func issuing(t *testing.T, idp *authtest.Server, mod func(*authfallback.OfflineConfig)) *authfallback.OfflineIssuer {
	t.Helper()
	cfg := authfallback.OfflineConfig{
		Issuer: fleetOfflineIssuer, Audience: []string{idp.Audience()}, AllowedScopes: []string{"orders:read"},
		AuditLog: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	o, err := authfallback.NewOfflineIssuer(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// TestOfflineVerifyOnlyFleet: replica A mints offline tokens (its key in
// memory, or any crypto.Signer) and publishes its keys; replica B holds no
// private key, trusts A's issuer from the published JWKS (or static public
// keys), accepts A's offline tokens in fallback mode, and sees a rotation
// on A without a restart. All over real HTTP.
func TestOfflineVerifyOnlyFleet(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	signerA := issuing(t, idp, nil)
	a := newOfflineReplica(t, idp, signerA, true)

	trustB := issuing(t, idp, func(c *authfallback.OfflineConfig) {
		c.JWKSURL = a.srv.URL + "/offline/jwks"
		c.HTTPClient = &http.Client{}
		c.RefreshInterval = time.Hour // the rotation must be seen through the unknown kid
	})
	_, err := trustB.Issue(context.Background(), &authfallback.Result{Subject: "x"}, nil)
	require.ErrorIs(t, err, authfallback.ErrVerifyOnly, "no private key on B")
	b := newOfflineReplica(t, idp, trustB, false)
	static := issuing(t, idp, func(c *authfallback.OfflineConfig) { c.PublicKeys = signerA.PublicKeys() })
	c := newOfflineReplica(t, idp, static, false)

	primary := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read orders:write"})
	idp.SetDown(true)
	for _, r := range []*offlineReplica{a, b, c} {
		require.Error(t, r.v.Refresh(context.Background()))
	}
	off := a.exchange(t, primary)
	for name, r := range map[string]*offlineReplica{"JWKS URL": b, "static keys": c} {
		resp := r.do(t, http.MethodGet, "/orders", off)
		require.Equal(t, http.StatusNoContent, resp.StatusCode, name)
		assert.Equal(t, authfallback.ReasonOfflineToken, resp.Header.Get("Holdfast-Degraded"), name)
	}

	// A rotates to a KMS-like signer (an ECDSA P-256 crypto.Signer).
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	require.NoError(t, signerA.Rotate(kmsSigner{ec}, "kms-1"))
	off2 := a.exchange(t, primary)
	parsed, _, err := jwt.NewParser().ParseUnverified(off2, jwt.MapClaims{})
	require.NoError(t, err)
	require.Equal(t, "ES256", parsed.Method.Alg())
	require.Equal(t, "kms-1", parsed.Header["kid"])
	// B has not fetched yet: the unknown kid is a key it cannot confirm
	// during the outage (503 + Retry-After, not 401); it fetches at once.
	resp := b.do(t, http.MethodGet, "/orders", off2)
	if resp.StatusCode != http.StatusNoContent {
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	}
	require.Eventually(t, func() bool {
		return b.do(t, http.MethodGet, "/orders", off2).StatusCode == http.StatusNoContent
	}, 5*time.Second, 20*time.Millisecond, "the rotation reaches B without a restart")
	assert.Equal(t, http.StatusNoContent, b.do(t, http.MethodGet, "/orders", off).StatusCode, "the previous key is still trusted")
	assert.Equal(t, http.StatusServiceUnavailable, c.do(t, http.MethodGet, "/orders", off2).StatusCode,
		"static keys do not know the new key")
}

// kmsSigner is a crypto.Signer that is not an in-memory key type, as a KMS
// or HSM client is.
type kmsSigner struct{ k *ecdsa.PrivateKey }

func (s kmsSigner) Public() crypto.PublicKey { return &s.k.PublicKey }
func (s kmsSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, digest, opts)
}

// TestExchangeRateLimit: one subject gets DefaultExchangeRate offline
// tokens per minute, then 429 with Retry-After; another subject is not
// affected.
func TestExchangeRateLimit(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	a := newOfflineReplica(t, idp, issuing(t, idp, nil), true)
	alice := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read"})
	for i := range authfallback.DefaultExchangeRate {
		require.Equal(t, http.StatusOK, a.do(t, http.MethodPost, "/exchange", alice).StatusCode, "exchange %d", i)
	}
	resp := a.do(t, http.MethodPost, "/exchange", alice)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	var p map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
	assert.Contains(t, p["type"], authfallback.ProblemExchangeRateLimited)
	// Another token of the same subject shares the budget; another subject
	// has its own.
	alice2 := idp.Issue(jwt.MapClaims{"sub": "alice", "scope": "orders:read"})
	assert.Equal(t, http.StatusTooManyRequests, a.do(t, http.MethodPost, "/exchange", alice2).StatusCode)
	bob := idp.Issue(jwt.MapClaims{"sub": "bob", "scope": "orders:read"})
	assert.Equal(t, http.StatusOK, a.do(t, http.MethodPost, "/exchange", bob).StatusCode)
}

// TestOfflineJWKSLastKnownGood: a verify-only issuer keeps its last good
// key set when the published set turns empty, invalid or unreachable.
func TestOfflineJWKSLastKnownGood(t *testing.T) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	t.Cleanup(idp.Close)
	signer := issuing(t, idp, nil)
	var mode atomic.Int32
	pub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 1:
			_, _ = w.Write([]byte(`{"keys":[]}`))
		case 2:
			_, _ = w.Write([]byte(`<html>`))
		case 3:
			w.WriteHeader(http.StatusBadGateway)
		default:
			signer.JWKSHandler().ServeHTTP(w, r)
		}
	}))
	t.Cleanup(pub.Close)
	trust := issuing(t, idp, func(c *authfallback.OfflineConfig) {
		c.JWKSURL, c.HTTPClient, c.RefreshInterval = pub.URL, &http.Client{}, 10*time.Millisecond
	})
	require.Len(t, trust.PublicKeys(), 1)
	for m := int32(1); m <= 3; m++ {
		mode.Store(m)
		time.Sleep(100 * time.Millisecond)
		assert.Len(t, trust.PublicKeys(), 1, "mode %d: the last good set stays", m)
	}
	assert.Equal(t, signer.PublicKeys(), trust.PublicKeys())
}
