// Package authfallback provides JWT verification that survives an outage of
// the identity provider (IdP), its CDN or its JWKS endpoint.
//
// A [Verifier] verifies bearer tokens locally against a last-known-good JSON
// Web Key Set. It refreshes the set in the background, keeps it in memory and
// in a file ([Config.CacheFile]) so a service restarted during an outage
// verifies at once, and never replaces it with an empty, unparsable or
// unusable set. When refreshes fail the Verifier enters fallback mode: tokens
// it still accepts are marked with [Result.Degraded] and a [Result.Reason],
// and every such decision is written to the audit log. Past
// [Config.MaxStaleness] the cached keys are no longer trusted and
// verification fails closed.
//
// [Verifier.Handler] is net/http middleware: it takes the bearer token from
// the Authorization header, answers 401 with WWW-Authenticate and an RFC 9457
// problem document for a bad token, 503 with Retry-After when there are no
// keys at all, and otherwise passes the request on with the [Result] in its
// context ([FromContext]).
//
//	v, err := authfallback.New(authfallback.Config{
//		Issuer:    "https://idp.example.com/",
//		Audience:  []string{"my-api"},
//		JWKSURLs:  []string{"https://idp.example.com/.well-known/jwks.json"},
//		CacheFile: "/var/lib/my-api/jwks.json",
//	})
//	if err != nil { ... }
//	defer v.Close()
//	http.ListenAndServe(":8080", v.Handler(mux))
//
// The package authtest provides a fake IdP for tests.
package authfallback
