package authfallback_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// benchWriter is a reusable ResponseWriter that keeps only the status.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) WriteHeader(s int)           { w.status = s }

// BenchmarkIDPHandler compares, through the Handler, a cached introspected
// opaque token and a DPoP-bound JWT (a fresh proof per request, made
// before the timer starts) against the baseline, a plain repeated JWT; and
// the same plain JWT through an Issuers of two.
//
//	go test -run '^$' -bench BenchmarkIDPHandler -benchmem ./authfallback/
func BenchmarkIDPHandler(b *testing.B) {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "ES256"})
	defer idp.Close()
	other := authtest.New()
	defer other.Close()
	cfg := authfallback.Config{
		Issuer: idp.Issuer(), Audience: []string{idp.Audience()}, JWKSURLs: []string{idp.JWKSURL()},
		AuditLog: discard(),
		Introspection: &authfallback.IntrospectionConfig{
			URL: idp.IntrospectionURL(), ClientID: idp.ClientID(), ClientSecret: idp.ClientSecret(),
		},
	}
	v, err := authfallback.New(cfg)
	require.NoError(b, err)
	defer v.Close()
	ocfg := cfg
	ocfg.Introspection = nil
	ocfg.Issuer, ocfg.JWKSURLs = other.Issuer(), []string{other.JWKSURL()}
	is, err := authfallback.NewIssuers(ocfg, cfg)
	require.NoError(b, err)
	defer is.Close()

	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h, ih := v.Handler(next), is.Handler(next)
	const url = "http://api.example.com/orders"
	run := func(b *testing.B, h http.Handler, auth string, proofs []string) {
		req := httptest.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", auth)
		w := &benchWriter{h: http.Header{}}
		h.ServeHTTP(w, req) // warm the caches
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if proofs != nil {
				req.Header.Set("DPoP", proofs[i])
			}
			w.status = 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusNoContent {
				b.Fatalf("status %d", w.status)
			}
		}
	}

	plain := idp.Issue(jwt.MapClaims{"scope": "read"})
	b.Run("baseline=jwt-repeated", func(b *testing.B) { run(b, h, "Bearer "+plain, nil) })
	opaque := idp.IssueOpaque(map[string]any{"scope": "read"})
	b.Run("introspected-cached", func(b *testing.B) { run(b, h, "Bearer "+opaque, nil) })
	key := authtest.NewDPoPKey("ES256")
	bound := idp.Issue(jwt.MapClaims{"scope": "read", "cnf": key.Confirmation()})
	b.Run("dpop-bound", func(b *testing.B) {
		proofs := make([]string, b.N)
		for i := range proofs {
			proofs[i] = key.Proof(http.MethodGet, url, bound)
		}
		// The warm-up request needs a proof of its own.
		req := httptest.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "DPoP "+bound)
		req.Header.Set("DPoP", key.Proof(http.MethodGet, url, bound))
		w := &benchWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		require.Equal(b, http.StatusNoContent, w.status)
		run(b, h, "DPoP "+bound, proofs)
	})
	// What a DPoP proof costs at least: one ES256 signature check.
	b.Run("reference=es256-verify", func(b *testing.B) {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(b, err)
		sig, err := jwt.SigningMethodES256.Sign("header.payload", priv)
		require.NoError(b, err)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := jwt.SigningMethodES256.Verify("header.payload", sig, &priv.PublicKey); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("issuers-jwt-repeated", func(b *testing.B) { run(b, ih, "Bearer "+plain, nil) })
	b.Run("issuers-introspected-cached", func(b *testing.B) { run(b, ih, "Bearer "+opaque, nil) })
	_ = context.Background
}
