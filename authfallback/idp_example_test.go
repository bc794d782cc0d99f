package authfallback_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// Two identity providers from two vendors behind one Handler; each keeps
// its own keys, policy and fallback mode.
func ExampleNewIssuers() {
	vendorA, vendorB := authtest.New(), authtest.New()
	defer vendorA.Close()
	defer vendorB.Close()

	quiet := slog.New(slog.DiscardHandler)
	is, err := authfallback.NewIssuers(
		authfallback.Config{Issuer: vendorA.Issuer(), Audience: []string{"test-api"}, Discovery: true, AuditLog: quiet},
		authfallback.Config{Issuer: vendorB.Issuer(), Audience: []string{"test-api"}, JWKSURLs: []string{vendorB.JWKSURL()}, AuditLog: quiet},
	)
	if err != nil {
		panic(err)
	}
	defer is.Close()

	h := is.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, _ := authfallback.FromContext(r.Context())
		fmt.Println(res.Subject, res.Issuer == vendorB.Issuer())
	}))
	for _, tok := range []string{
		vendorA.Issue(jwt.MapClaims{"sub": "alice"}),
		vendorB.Issue(jwt.MapClaims{"sub": "bob"}),
	} {
		req := httptest.NewRequest(http.MethodGet, "/orders", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	// Output:
	// alice false
	// bob true
}

// An opaque access token, verified by introspection (RFC 7662).
func ExampleIntrospectionConfig() {
	idp := authtest.New()
	defer idp.Close()

	v, err := authfallback.New(authfallback.Config{
		Issuer:   idp.Issuer(),
		Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()},
		Introspection: &authfallback.IntrospectionConfig{
			URL:          idp.IntrospectionURL(),
			ClientID:     idp.ClientID(),
			ClientSecret: idp.ClientSecret(),
		},
		AuditLog: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()

	tok := idp.IssueOpaque(map[string]any{"sub": "carol", "scope": "orders:read"})
	res, err := v.Verify(context.Background(), tok)
	fmt.Println(res.Subject, res.Scopes, err)
	idp.Revoke(tok)
	// A positive answer is reused for at most CacheTTL (1 minute).
	res, err = v.Verify(context.Background(), tok)
	fmt.Println(res.Subject, err)
	// Output:
	// carol [orders:read] <nil>
	// carol <nil>
}

// A token bound to the client's key (DPoP, RFC 9449) is accepted only with
// a fresh proof signed by that key.
func ExampleVerifier_VerifyRequest() {
	idp := authtest.New()
	defer idp.Close()
	v, err := authfallback.New(authfallback.Config{
		Issuer:   idp.Issuer(),
		Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()},
		AuditLog: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()

	key := authtest.NewDPoPKey("ES256")
	tok := idp.Issue(jwt.MapClaims{"sub": "dave", "cnf": key.Confirmation()})
	const url = "https://api.example.com/orders"
	req := httptest.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "DPoP "+tok)

	_, err = v.VerifyRequest(req)
	fmt.Println(err != nil)
	req.Header.Set("DPoP", key.Proof(http.MethodGet, url, tok))
	res, err := v.VerifyRequest(req)
	fmt.Println(res.Subject, err)
	_, err = v.VerifyRequest(req) // the same proof again
	fmt.Println(err != nil)
	// Output:
	// true
	// dave <nil>
	// true
}
