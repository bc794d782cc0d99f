package redisstore_test

import (
	"log"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/redisstore"
)

// Every replica of a service shares its authfallback outage state (keys,
// tokens seen valid, degraded acceptances) in one Redis: a replica started
// on an empty disk during an IdP outage verifies at once, and the grace
// window and reconciliation hold across the fleet. This example needs a
// running Redis and IdP, so it is not run as a test (it has no Output
// line); the package's tests run the same against real servers.
func ExampleNewAuthState() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	v, err := authfallback.New(authfallback.Config{
		Issuer:   "https://idp.example.com/",
		Audience: []string{"orders-api"},
		JWKSURLs: []string{"https://idp.example.com/.well-known/jwks.json"},
		State:    redisstore.NewAuthState(client, redisstore.AuthStateConfig{Prefix: "orders-api:auth"}),
		Policy:   authfallback.Policy{AllowedScopes: []string{"orders:read"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	log.Fatal(http.ListenAndServe(":8080", v.Handler(http.NotFoundHandler())))
}
