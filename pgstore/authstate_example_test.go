package pgstore_test

import (
	"context"
	"log"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/pgstore"
)

// Every replica of a service shares its authfallback outage state (keys,
// tokens seen valid, degraded acceptances) in one PostgreSQL database.
// This example needs a running database and IdP, so it is not run as a
// test (it has no Output line); the package's tests run the same against
// real servers.
func ExampleNewAuthState() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://orders@db/orders")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	state := pgstore.NewAuthState(pool, pgstore.AuthStateConfig{Table: "orders_auth"})
	if err := state.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	v, err := authfallback.New(authfallback.Config{
		Issuer:   "https://idp.example.com/",
		Audience: []string{"orders-api"},
		JWKSURLs: []string{"https://idp.example.com/.well-known/jwks.json"},
		State:    state,
		Policy:   authfallback.Policy{AllowedScopes: []string{"orders:read"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	log.Fatal(http.ListenAndServe(":8080", v.Handler(http.NotFoundHandler())))
}
