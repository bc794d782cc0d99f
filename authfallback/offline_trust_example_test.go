package authfallback_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/holdfast-go/holdfast/authfallback"
)

// The replica that mints offline tokens holds the signing key (here a new
// Ed25519 key in memory; any KMS or HSM crypto.Signer fits
// OfflineConfig.Signer) and publishes its public keys with JWKSHandler.
// The other replicas trust the issuer from its public keys only: static
// PublicKeys as here, or JWKSURL pointing at the issuing replica's
// JWKSHandler, which also carries rotations to them.
func ExampleOfflineConfig_verifyOnly() {
	quiet := slog.New(slog.DiscardHandler)
	issuing, err := authfallback.NewOfflineIssuer(authfallback.OfflineConfig{
		Issuer: "https://orders-api.example.com/offline", Audience: []string{"orders-api"},
		AllowedScopes: []string{"orders:read"}, AuditLog: quiet,
	})
	if err != nil {
		panic(err)
	}
	trusting, err := authfallback.NewOfflineIssuer(authfallback.OfflineConfig{
		Issuer: "https://orders-api.example.com/offline", Audience: []string{"orders-api"},
		AllowedScopes: []string{"orders:read"}, AuditLog: quiet,
		PublicKeys: issuing.PublicKeys(),
	})
	if err != nil {
		panic(err)
	}
	defer trusting.Close()
	_, err = trusting.Issue(context.Background(), &authfallback.Result{Subject: "alice"}, nil)
	fmt.Println(errors.Is(err, authfallback.ErrVerifyOnly), len(trusting.PublicKeys()))
	// Output: true 1
}
