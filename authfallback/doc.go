// Package authfallback provides JWT verification that survives an outage of
// the identity provider (IdP), its CDN or its JWKS endpoint.
//
// A [Verifier] verifies bearer tokens locally against a last-known-good JSON
// Web Key Set (JWKS). It refreshes the set in the background every
// [Config.RefreshInterval] (default 5 minutes), trying the primary URL and
// then the alternates of [Config.JWKSURLs]; a failed refresh is retried with
// jittered exponential backoff. A fetched set that is not 200, does not
// parse, is empty or holds no usable key never replaces the last-known-good
// set. Every successful refresh is written atomically (mode 0600) to
// [Config.CacheFile], which [New] reads first, so a service restarted during
// an outage verifies at once.
//
// Keys are found by "kid" in a map and each is bound to one algorithm
// (its "alg", or the one its key type implies). Symmetric ("oct") keys are
// dropped; "none" and HMAC never verify. A token whose kid is unknown is
// refused at once and triggers at most one background refresh per
// [Config.UnknownKIDRefreshInterval], so a flood of random kids costs nothing
// and a real rotation is picked up within that interval.
//
// When refreshes fail the Verifier is in fallback mode: tokens it still
// accepts carry [Result.Degraded] and a [Result.Reason]
// ([ReasonJWKSUnreachable], [ReasonJWKSInvalid]; [ReasonJWKSStale] when old
// keys from the CacheFile are not yet confirmed), and every such acceptance
// is an audit event ([Config.AuditLog], slog.Default() when nil) that
// carries a SHA-256 hash of the token, never the token. Past
// [Config.MaxStaleness] (default 24 hours) the keys are no longer trusted and
// verification fails closed. [Verifier.Status] reports the state for health
// checks; [Config.OnFallbackEnter], [Config.OnFallbackExit] and
// [Config.OnRefreshError] report transitions (e.g. to a degrade.Controller).
//
// A verified token is remembered, by hash, until its "exp" (bounded by
// [Config.MaxCachedTokens]); a repeated token costs a hash and a map lookup
// instead of a signature check. Entries of a key that leaves the set are
// dropped.
//
// [Verifier.Handler] is net/http middleware: it takes the bearer token from
// the Authorization header (RFC 6750), answers 401 with WWW-Authenticate and
// an RFC 9457 problem document for a missing or bad token, 503 with
// Retry-After when no trusted key is available (the token is not at fault),
// and otherwise passes the request on with the [Result] in its context
// ([FromContext]) and, for a degraded request, a Holdfast-Degraded response
// header.
//
//	v, err := authfallback.New(authfallback.Config{
//		Issuer:    "https://idp.example.com/",
//		Audience:  []string{"orders-api"},
//		JWKSURLs:  []string{"https://idp.example.com/.well-known/jwks.json"},
//		CacheFile: "/var/lib/orders-api/jwks.json",
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer v.Close()
//	log.Fatal(http.ListenAndServe(":8080", v.Handler(mux)))
//
// A Verifier is safe for concurrent use. Hooks may be called concurrently,
// are called without any lock held, and must not block.
//
// The package [github.com/holdfast-go/holdfast/authfallback/authtest]
// provides a fake IdP for tests.
package authfallback
