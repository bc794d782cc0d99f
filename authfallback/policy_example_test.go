package authfallback_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
)

// The fallback policy narrows what a degraded request may do, and the
// handler sees what was removed.
func ExamplePolicy() {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	v, err := authfallback.New(authfallback.Config{
		Issuer:   idp.Issuer(),
		Audience: []string{idp.Audience()},
		JWKSURLs: []string{idp.JWKSURL()},
		Policy: authfallback.Policy{
			MaxOfflineDuration: time.Hour,
			AllowedScopes:      []string{"orders:read"},
			MaxTokenAge:        24 * time.Hour,
		},
		AuditLog: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()
	tok := idp.Issue(jwt.MapClaims{"scope": "orders:read orders:write"})

	res, _ := v.Verify(context.Background(), tok)
	fmt.Println(res.Degraded, res.Scopes)

	idp.SetDown(true)
	_ = v.Refresh(context.Background()) // fails: fallback mode
	res, _ = v.Verify(context.Background(), tok)
	fmt.Println(res.Degraded, res.Reason, res.Scopes, res.RemovedScopes)
	fmt.Println(v.Status().FallbackDeadline.Sub(v.Status().FallbackSince) <= time.Hour)
	// Output:
	// false [orders:read orders:write]
	// true jwks-unreachable [orders:read] [orders:write]
	// true
}

// When the IdP returns, the tokens accepted during the outage are checked
// again, and those revoked meanwhile are reported.
func ExampleConfig_reconcile() {
	idp := authtest.NewWithConfig(authtest.Config{Algorithm: "EdDSA"})
	defer idp.Close()
	var revs authfallback.MemoryRevocations // or a RevocationList
	v, err := authfallback.New(authfallback.Config{
		Issuer:      idp.Issuer(),
		Audience:    []string{idp.Audience()},
		JWKSURLs:    []string{idp.JWKSURL()},
		Policy:      authfallback.Policy{AllowedScopes: []string{"orders:read"}},
		Revocations: &revs,
		AuditLog:    slog.New(slog.DiscardHandler),
		OnRevocation: func(ev authfallback.RevocationEvent) {
			fmt.Println("revoked:", ev.Subject)
		},
		OnReconcile: func(ev authfallback.ReconcileEvent) {
			fmt.Println("reconcile:", ev.Subject, ev.Finding, ev.Reason, ev.Accepted)
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()
	tok := idp.Issue(jwt.MapClaims{"sub": "mallory"})

	idp.SetDown(true)
	_ = v.Refresh(context.Background())
	for range 2 {
		_, _ = v.Verify(context.Background(), tok) // accepted, degraded
	}

	revs.RevokeSubject("mallory", time.Now())
	idp.SetDown(false)
	_ = v.Refresh(context.Background())

	_, err = v.Verify(context.Background(), tok)
	fmt.Println(errors.Is(err, authfallback.ErrRevoked))
	// Output:
	// revoked: mallory
	// reconcile: mallory subject-revoked jwks-unreachable 2
	// true
}
