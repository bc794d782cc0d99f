package authfallback_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
)

func TestFetchURLsMustBeHTTPSUnlessLoopback(t *testing.T) {
	base := authfallback.Config{Issuer: "https://idp.example/", Audience: []string{"api"}, AuditLog: discard()}
	for _, u := range []string{"http://idp.example/jwks", "http://10.0.0.1/jwks", "http://127.0.0.1.evil.example/jwks", "ftp://idp.example/jwks", "https://user:pw@idp.example/jwks"} {
		c := base
		c.JWKSURLs = []string{u}
		_, err := authfallback.New(c)
		assert.Error(t, err, u)
		_, err = authfallback.NewRevocationList(authfallback.RevocationListConfig{URL: u})
		assert.Error(t, err, u)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens: New starts without keys, no error
	for _, u := range []string{down.URL + "/jwks", "http://localhost:1/jwks", "http://[::1]:1/jwks", "https://127.0.0.1:1/jwks"} {
		c := base
		c.JWKSURLs = []string{u}
		v, err := authfallback.New(c)
		require.NoError(t, err, u)
		require.NoError(t, v.Close())
	}
}

// A redirect from an https JWKS URL to plain http (even loopback) is not
// followed: whoever answers the http fetch could plant keys.
func TestJWKSRedirectDowngradeRefused(t *testing.T) {
	idp := newIdP(t, "EdDSA") // plain http on 127.0.0.1
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, idp.JWKSURL(), http.StatusFound)
	}))
	defer tls.Close()
	userRedirects := 0
	client := tls.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { userRedirects++; return nil }
	h := newHarness(t, idp, func(c *authfallback.Config) {
		c.JWKSURLs = []string{tls.URL + "/jwks"}
		c.HTTPClient = client
	})
	_, err := h.verify(idp.Issue(nil))
	assert.ErrorIs(t, err, authfallback.ErrNoKeys, "the downgraded key set was not loaded")
	assert.Zero(t, userRedirects, "refused before the client's own CheckRedirect")
	assert.NotNil(t, client.CheckRedirect, "the caller's client is not modified")

	// https -> https is followed, and the client's CheckRedirect runs.
	tls2 := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			_, _ = w.Write(idp.JWKS())
			return
		}
		http.Redirect(w, r, "/jwks", http.StatusFound)
	}))
	defer tls2.Close()
	c2 := tls2.Client()
	c2.CheckRedirect = func(*http.Request, []*http.Request) error { userRedirects++; return nil }
	h2 := newHarness(t, idp, func(c *authfallback.Config) {
		c.JWKSURLs = []string{tls2.URL + "/old"}
		c.HTTPClient = c2
	})
	_, err = h2.verify(idp.Issue(nil))
	require.NoError(t, err)
	assert.Equal(t, 1, userRedirects)

	// The revocation list: the same rule.
	list := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"jti":["x"]}`))
	}))
	defer list.Close()
	tls3 := httptest.NewTLSServer(http.RedirectHandler(list.URL, http.StatusFound))
	defer tls3.Close()
	rl, err := authfallback.NewRevocationList(authfallback.RevocationListConfig{URL: tls3.URL + "/revocations", HTTPClient: tls3.Client()})
	require.NoError(t, err)
	defer rl.Close()
	err = rl.Refresh(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "redirect refused")
}
