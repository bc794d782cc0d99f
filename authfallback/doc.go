// Package authfallback provides JWT verification that survives an outage of
// the identity provider (IdP), its CDN or its JWKS endpoint, under a bounded
// fallback policy, with offline tokens, revocation and reconciliation, and
// an oauth2 token source for clients that outlives a token-endpoint outage.
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
// refused at once (401; in fallback mode 503 with Retry-After, since a key
// rotated in during the outage cannot be fetched) and triggers at most one
// background refresh per [Config.UnknownKIDRefreshInterval], so a flood of
// random kids costs nothing and a real rotation is picked up within that
// interval. An alternate URL cannot silently change the key under a kid
// the primary served: such a key verifies only degraded
// ([ReasonJWKSKeyChanged]), with an audit event. A token whose header or
// claims name a member twice, or whose "sub", "iss" or "jti" is not a
// string, is refused.
//
// When refreshes fail the Verifier is in fallback mode: tokens it still
// accepts carry [Result.Degraded] and a [Result.Reason]
// ([ReasonJWKSUnreachable], [ReasonJWKSInvalid]; [ReasonJWKSStale] when
// keys from a CacheFile older than RefreshInterval are not yet confirmed by
// a fetch, which the Policy treats as fallback mode, with
// MaxOfflineDuration counted from fetched_at + RefreshInterval; a restart
// with a younger CacheFile is not degraded), and every such acceptance
// is audited ([Config.AuditLog], slog.Default() when nil) with a SHA-256
// hash of the token, never the token: the first acceptance of a token at
// once, later ones at most once per [DegradedAuditInterval] with their
// count. Past
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
//		Issuer:      "https://idp.example.com/",
//		Audience:    []string{"orders-api"},
//		JWKSURLs:    []string{"https://idp.example.com/.well-known/jwks.json"},
//		CacheFile:   "/var/lib/orders-api/jwks.json",
//		Policy:      authfallback.Policy{AllowedScopes: []string{"orders:read"}},
//		Revocations: revocationList, // an *authfallback.RevocationList
//		OnReconcile: func(ev authfallback.ReconcileEvent) { endSession(ev.Subject) },
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer v.Close()
//	log.Fatal(http.ListenAndServe(":8080", v.Handler(mux)))
//
// # Fallback policy
//
// Fallback is a bounded, audited policy ([Config.Policy], see [Policy]),
// applied to every request authenticated in fallback mode, with an offline
// token or in the grace window:
//
//   - MaxOfflineDuration (default 30 minutes): after it, nothing degraded
//     is accepted; verification fails closed with [ErrFallbackExpired],
//     which Handler answers 503 with Retry-After (the token is not at
//     fault). [Status.FallbackDeadline] says when.
//   - AllowedScopes: a degraded [Result] keeps only these scopes;
//     [Result.RemovedScopes] lists the others. Empty means no scope at
//     all: fallback never widens access. Its Claims are a copy whose
//     "scope" and "scp" hold the narrowed set too. [Result.Scopes] and
//     [Result.HasScope] are the authorisation surface: other claims
//     (roles, groups, permissions, custom ones) are not narrowed, so a
//     service that authorises from them must check [Result.Degraded].
//   - MaxTokenAge: degraded tokens issued longer ago (or without "iat")
//     are refused.
//   - ExpiredGrace (default 10 minutes): a token that this Verifier (or
//     a replica sharing [Config.State]) saw valid before fallback mode
//     began, and that expired during it, is accepted on every request
//     until exp + ExpiredGrace, with [ReasonExpiredGrace], narrowed like
//     any degraded Result; the window is never renewed or chained (no
//     offline token is issued for it) and ends with fallback mode. A
//     token no replica saw valid is never given grace.
//
// # A fleet: shared outage state
//
// [Config.State] (a [StateStore]: [NewMemoryState] in one process, or the
// Redis and PostgreSQL stores redisstore.NewAuthState and
// pgstore.NewAuthState of the driver modules) shares what the replicas of
// a fleet learn before and during an outage: the last-known-good key set
// (the CacheFile's document, with its rules: bound to the issuer and JWKS
// URLs, never empty, never replaced by an older one, refused if invalid; a
// key changed under a known kid is audited), the tokens seen valid (by
// token hash, for the grace window) and the degraded acceptances (for
// reconciliation: each is reconciled by one replica). A replica started
// on an empty disk during an outage loads the keys at once; after a
// failed refresh it takes a newer set another replica fetched, and once
// another replica has fetched one since its fallback mode began it
// refreshes at once rather than after its backoff, so the fleet leaves
// fallback mode (grace windows, offline tokens) together. Writes are
// batched every [Config.StateFlushInterval] (default 1 second: the
// propagation delay) and on Close, so no verification waits for the store;
// the only read on the request path is the grace record of an expired
// token in fallback mode that this replica never saw (bounded by one
// second, misses remembered). A cached repeated token never touches the
// network.
//
// # Offline tokens
//
// An [OfflineIssuer] mints short-lived (at most 15 minutes) tokens under an
// issuer of its own, signed through a crypto.Signer (an in-memory Ed25519
// key by default, or any KMS or HSM signer of an Ed25519 or ECDSA P-256
// key), with scopes within its AllowedScopes, at most
// [OfflineConfig.ExchangeRate] per subject per minute (default 10; 429
// with Retry-After past it), and writes every issuance to its audit log.
// Verifying replicas need no private key: an OfflineIssuer built from
// [OfflineConfig.PublicKeys] or [OfflineConfig.JWKSURL] (the issuing
// replica's [OfflineIssuer.JWKSHandler], fetched with last-known-good
// caching, at once on an unknown kid) is verify-only, and a Rotate on the
// issuing replica reaches every replica through the published keys. Its [OfflineIssuer.ExchangeHandler],
// mounted behind [Verifier.Handler], gives a caller whose primary token
// verifies (normally, or degraded by fallback mode or stale keys; never a
// token in its expired grace window) an offline token for the same
// subject; an offline token never buys another. The offline token never
// outlives its primary and carries the primary's jti and iat
// ([ClaimPrimaryID], [ClaimPrimaryIssuedAt]): revoking the primary (or its
// subject) revokes it, and [Policy.MaxTokenAge] counts from the primary.
// A Verifier with [Config.Offline] trusts the issuer's current and not yet
// retired keys (a [OfflineIssuer.Rotate] applies at once) and accepts its
// tokens, with [ReasonOfflineToken], only in fallback mode unless
// [Config.AcceptOfflineTokensAlways] is set, and only with scopes within
// [Policy.AllowedScopes]. Offline tokens pass the same checks, cache,
// policy and revocation list as any other token.
//
// # Revocation and reconciliation
//
// [Config.Revocations] is consulted on every verification, cache hits
// included; a revoked token fails with [ErrRevoked] (401). A
// [RevocationList] polls a JSON list over HTTP and keeps the last good one
// in memory and in a file; [MemoryRevocations] is in-memory and the model
// for a list in Redis or a database; any [Revocations] implementation
// plugs in. [Config.OnRevocation] reports each new revocation of a
// RevocationList or MemoryRevocations. While the source reports itself
// stale ([RevocationList.Stale]: never loaded, or older than
// [RevocationListConfig.MaxStaleness], default 24 hours), accepted tokens
// are degraded with [ReasonRevocationsStale] and narrowed by the policy,
// so revocation never fails open silently.
//
// The Verifier records every token it accepts degraded (bounded by
// [Config.MaxDegradedRecords], and per subject by
// [Config.MaxDegradedRecordsPerSubject], so one account cannot crowd out
// another's; shared by the fleet through [Config.State]). On the first successful key refresh after
// that (the IdP is back), it refreshes the revocation source first, if it
// has a Refresh(context.Context) error method, then re-checks every
// recorded subject and "jti", and reports each one now revoked, or signed
// by a key that left the key set, through [Config.OnReconcile] (a
// [ReconcileEvent]), so the service can end the session and undo or flag
// what was done with it. Every degraded acceptance, grace use, policy
// refusal and reconcile finding is an audit event.
//
// # Identity providers
//
// [NewIssuers] puts several issuers behind one Handler, each with its own
// Verifier, keys and fallback state; a JWT's unverified "iss" picks the
// Verifier. [Config.Discovery] finds the JWKS (and introspection) endpoints
// through OIDC discovery and keeps the document as it keeps keys.
// [Config.Introspection] checks opaque tokens at an RFC 7662 endpoint, with
// cached positive answers and a degraded mode while it is down; an issuer
// configured with introspection alone (no JWKSURLs, CacheFile or Discovery)
// introspects its JWTs too. [Config.DPoP] checks the proofs of DPoP-bound
// tokens (RFC 9449). The examples of NewIssuers and IntrospectionConfig
// show issuers and introspection wired.
//
// # Client side
//
// [TokenSource] wraps an oauth2.TokenSource: it refreshes the token in the
// background at about 80 % of its lifetime (with jitter), keeps handing out
// the current token while the token endpoint fails, retrying with backoff,
// and never hands out an expired one; it never waits on a hanging token
// endpoint while its token is valid, and fails with [ErrTokenUnavailable]
// by then ([TokenSourceConfig.FetchTimeout]). [TokenSource.Transport] adds
// the Bearer header, like oauth2.Transport.
//
// A Verifier is safe for concurrent use. Hooks (including
// [Config.OnVerify], called for every verification) may be called
// concurrently, are called without any lock held, never from inside [New],
// and must not block.
//
// The package [github.com/holdfast-go/holdfast/authfallback/authtest]
// provides a fake IdP for tests.
package authfallback
