package authfallback

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Defaults of [Config].
const (
	DefaultRefreshInterval           = 5 * time.Minute
	DefaultMaxStaleness              = 24 * time.Hour
	DefaultUnknownKIDRefreshInterval = time.Minute
	DefaultFetchTimeout              = 10 * time.Second
	DefaultMaxTokenSize              = 8 << 10
	DefaultMaxCachedTokens           = 10000
	DefaultMaxDegradedRecords        = 10000
	// MaxLeeway is the largest Leeway New accepts.
	MaxLeeway = 60 * time.Second
	// MaxKIDLength is the longest "kid" header a token may carry.
	MaxKIDLength = 256
	// MaxJWKSSize bounds a JWKS document or CacheFile read from outside.
	MaxJWKSSize = 1 << 20
	// MaxKeys bounds the number of keys kept from one JWKS document.
	MaxKeys = 256
)

// supportedAlgorithm reports whether a Config may allow alg: asymmetric
// algorithms only. HMAC (HS*) and "none" are never accepted.
func supportedAlgorithm(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		return true
	}
	return false
}

// Config configures a [Verifier]. New copies it; changing it afterwards has
// no effect.
type Config struct {
	// Issuer is the required "iss" claim. Required.
	Issuer string
	// Audience lists accepted "aud" values; a token must carry at least one.
	// Required.
	Audience []string
	// JWKSURLs are where the key set is fetched: https URLs (plain http
	// only to a loopback host: 127.0.0.0/8, ::1, "localhost"), the primary first, then
	// alternates (e.g. a mirror or a CDN-independent origin) that are tried
	// in order when the one before fails. At least one is required unless
	// CacheFile is set; with none, the cached set is never refreshed, so
	// tokens are degraded ("jwks-stale", under the Policy) once it is older
	// than one RefreshInterval, and refused (ErrFallbackExpired) once
	// Policy.MaxOfflineDuration has passed since then.
	JWKSURLs []string
	// CacheFile, if set, is where the last-known-good key set is written
	// (atomically, mode 0600) after every successful refresh, and read by
	// New so a service restarted during an outage verifies at once. The
	// file records Issuer and JWKSURLs; New refuses (audit warning) a file
	// written for another issuer, for JWKS URLs that share none with
	// JWKSURLs, or in an older format. If empty, keys are kept in memory
	// only.
	CacheFile string
	// RefreshInterval is the time between two refreshes of the key set.
	// If zero, 5 minutes. A failed refresh is retried sooner, with jittered
	// exponential backoff capped at RefreshInterval.
	RefreshInterval time.Duration
	// UnknownKIDRefreshInterval is the least time between two refreshes
	// triggered by tokens whose "kid" is not in the key set. Such a refresh
	// runs in the background; the request is answered at once. If zero,
	// 1 minute.
	UnknownKIDRefreshInterval time.Duration
	// MaxStaleness is how old the key set may grow (time since the last
	// successful fetch) before it is no longer trusted and verification
	// fails closed. If zero, 24 hours.
	MaxStaleness time.Duration
	// FetchTimeout bounds one fetch of the key set. If zero, 10 seconds.
	FetchTimeout time.Duration
	// Algorithms is the allow-list of signature algorithms, checked before
	// any key lookup. Only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are
	// accepted; New fails on "none" or HS*. If empty, RS256, ES256 and EdDSA.
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat. If zero, none.
	// At most 60 seconds.
	Leeway time.Duration
	// MaxTokenSize is the largest token, in bytes, that is parsed at all.
	// If zero, 8 KiB.
	MaxTokenSize int
	// MaxCachedTokens bounds the verified-token cache. If zero, 10000. If
	// negative, no token is cached.
	MaxCachedTokens int
	// HTTPClient fetches the key set. If nil, a client with
	// http.DefaultTransport is used. Either way the Verifier uses a copy
	// whose CheckRedirect refuses a redirect that leaves https (or goes to
	// plain http other than loopback) before calling the client's own
	// CheckRedirect; the client's Transport must not downgrade on its own.
	HTTPClient *http.Client
	// AuditLog receives the audit events: entry into and exit from fallback
	// mode, every degraded acceptance (with the scopes the policy removed),
	// every use of the expired grace, every degraded token the policy
	// refuses, every revoked token refused, every reconcile finding, every
	// rejected key set. Entries carry
	// a token hash, never a token. If nil, slog.Default() is used: a
	// fallback decision never leaves no trace.
	AuditLog *slog.Logger
	// DisableDegradedHeader stops Handler from writing the
	// Holdfast-Degraded response header (value: the Reason) on requests
	// that were authenticated in fallback mode.
	DisableDegradedHeader bool
	// Realm, if set, is sent as the realm of WWW-Authenticate challenges.
	Realm string
	// ErrorHandler writes the response for a request that Handler refuses.
	// err matches (errors.Is) ErrNoToken, ErrInvalidToken or ErrUnavailable.
	// If nil, an RFC 9457 problem is written: 401 with WWW-Authenticate for
	// a missing, bad, revoked (ErrRevoked) or out-of-policy
	// (ErrOutsidePolicy) token, 503 with Retry-After when no trusted keys
	// are available, fallback mode outlasted Policy.MaxOfflineDuration
	// (ErrFallbackExpired), or a token names a kid the key set lacks while
	// it cannot be refreshed (ErrUnknownKeyID in fallback mode).
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
	// WriteProblem, if set, writes the problems of the default
	// ErrorHandler (and nothing else): p carries the status, the type
	// (ProblemMissingToken, ProblemInvalidToken, ProblemUnavailable) and
	// the Retry-After and WWW-Authenticate values. If nil, p is written as
	// RFC 9457 application/problem+json.
	WriteProblem func(w http.ResponseWriter, r *http.Request, p Problem)

	// Policy bounds what is accepted in fallback mode: how long, which
	// scopes, how old a token, and the grace for recently expired tokens.
	// Its zero value is the safe default; see [Policy].
	Policy Policy
	// Offline, if set, is the issuer of offline tokens this Verifier
	// trusts: its current and not yet retired public keys verify tokens of
	// its issuer, marked Degraded with Reason "offline-token", only while
	// the Verifier is in fallback mode (and within
	// Policy.MaxOfflineDuration) unless AcceptOfflineTokensAlways is set.
	// Key rotations of the issuer apply at once; a verify-only issuer
	// (OfflineConfig.PublicKeys or JWKSURL: no private key on this
	// replica) sees those of the issuing replica through its published
	// keys. New fails if its issuer is
	// Issuer, if its audience shares no value with Audience, or if it
	// allows a scope outside Policy.AllowedScopes.
	Offline *OfflineIssuer
	// AcceptOfflineTokensAlways accepts offline tokens outside fallback
	// mode too (still marked degraded). If false, an offline token is
	// refused (401) while the IdP is reachable.
	AcceptOfflineTokensAlways bool
	// Revocations, if set, is consulted on every verification, including
	// those answered from the verified-token cache: a revoked token is
	// refused (401). Use a [RevocationList], a [MemoryRevocations] or your
	// own source. If it also has a method Refresh(context.Context) error
	// (as RevocationList has), reconciliation calls it before re-checking.
	Revocations Revocations
	// MaxDegradedRecords bounds the record of tokens accepted degraded,
	// kept for reconciliation (one entry per token). If zero, 10000. Once
	// full, further tokens are still accepted but not recorded; the
	// "reconcile done" audit event says how many were not.
	MaxDegradedRecords int
	// MaxDegradedRecordsPerSubject bounds the entries of one subject in
	// that record, so one account (e.g. exchanging its token for offline
	// tokens again and again) cannot crowd out another's. Tokens past it
	// are accepted, audited on every acceptance and counted as not
	// recorded. If zero, 64.
	MaxDegradedRecordsPerSubject int

	// OnFallbackEnter is called when refreshes start failing and the
	// Verifier enters fallback mode. Hooks may be nil, may be called
	// concurrently, are called without any lock held, and must not block.
	OnFallbackEnter func(FallbackEvent)
	// OnFallbackExit is called when a refresh succeeds again.
	OnFallbackExit func(FallbackEvent)
	// OnRefreshError is called for every failed refresh.
	OnRefreshError func(RefreshErrorEvent)
	// OnReconcile is called, once the IdP is back, for every token that
	// was accepted degraded and is now found revoked or signed by a key
	// that left the key set, so the service can end the session and undo
	// or flag what it did. See [ReconcileEvent]. Reconciliation runs on
	// the goroutine whose refresh succeeded (the background loop, or a
	// caller of Refresh), after OnFallbackExit and after refreshing
	// Revocations (bounded by FetchTimeout) when the source has a
	// Refresh(context.Context) error method.
	OnReconcile func(ReconcileEvent)
	// OnVerify is called after every verification with its outcome (see
	// [VerifyEvent]); never with the token. It may be nil (then no event
	// is built: nothing is allocated), may be called concurrently, and
	// must not block.
	OnVerify func(VerifyEvent)
	// State, if set, is the outage state shared by a fleet of Verifiers
	// of the same Issuer (see [StateStore]): the last-known-good key set,
	// the tokens seen valid (for the grace window) and the degraded
	// acceptances awaiting reconciliation. A Verifier started with an
	// empty disk during an outage loads its keys from it at once. Writes
	// are batched in the background (see StateFlushInterval), so a
	// verification never waits for the store, except the lookup of an
	// expired token's grace record in fallback mode. If nil, the state is
	// kept in memory (and the keys in CacheFile, if set).
	State StateStore
	// StateFlushInterval is how often tokens seen valid and degraded
	// acceptances are written to State: the delay after which another
	// replica honours a grace record or reconciles an acceptance. If
	// zero, 1 second.
	StateFlushInterval time.Duration

	// OnRevocation is called for each revocation Revocations sees for the
	// first time, when Revocations is a [*RevocationList] or a
	// [*MemoryRevocations] (in addition to their own hooks). For another
	// source, call your hook from the source itself.
	OnRevocation func(RevocationEvent)

	// Discovery, if set, finds the key set URL in the issuer's OpenID
	// Connect discovery document: every refresh first fetches
	// Issuer (without its trailing "/") + DiscoveryPath, whose "issuer"
	// must equal Issuer exactly and whose "jwks_uri" must be https (plain
	// http only to a loopback host); Issuer itself must be such a URL.
	// The key set is then fetched from JWKSURLs first (explicit URLs win:
	// the first is the primary, the others alternates), then from the
	// discovered jwks_uri if it is not one of them; with JWKSURLs empty,
	// the issuer URL is all the configuration needed. A document that
	// cannot be fetched or is refused leaves the last-known-good one in
	// use; with a CacheFile it is kept in CacheFile+DiscoveryFileSuffix
	// (same hardened reading and atomic writing), so a restart while the
	// IdP is down verifies at once and knows where to fetch. See
	// [Verifier.Discovery].
	Discovery bool
	// Introspection, if set, verifies opaque tokens (those not shaped like
	// a JWT) through an RFC 7662 introspection endpoint, beside the JWTs
	// verified locally, under the same Issuer, Audience, Policy, Revocations
	// and OnReconcile; see [IntrospectionConfig]. Without JWKSURLs,
	// CacheFile or Discovery, the endpoint is the issuer's only way to
	// check a token, and JWTs are introspected too (but for the offline
	// tokens of Offline, verified with its keys).
	Introspection *IntrospectionConfig
	// DPoP configures the checking of DPoP proofs (RFC 9449): Handler
	// accepts a token bound to a key ("cnf" with "jkt") only under the
	// DPoP scheme with a valid proof, in fallback mode too. Its zero value
	// is the default; see [DPoPConfig].
	DPoP DPoPConfig
}

// FallbackEvent describes an entry into or an exit from fallback mode.
type FallbackEvent struct {
	// Reason is the degraded reason, e.g. "jwks-unreachable".
	Reason string
	// Since is when fallback mode began.
	Since time.Time
	// Duration is how long fallback mode lasted (exit only).
	Duration time.Duration
	// KeyAge is the age of the last-known-good key set.
	KeyAge time.Duration
	// Err is the refresh error that caused the entry (entry only).
	Err error
	// Issuer is the Config.Issuer of the Verifier.
	Issuer string
}

// RefreshErrorEvent describes a failed refresh of the key set.
type RefreshErrorEvent struct {
	// Err is the error of the last URL tried; it wraps the errors of all.
	Err error
	// Attempt counts consecutive failures, from 1.
	Attempt int
	// Retry is the delay before the next attempt.
	Retry time.Duration
	// KeyAge is the age of the last-known-good key set, zero if none.
	KeyAge time.Duration
	// Issuer is the Config.Issuer of the Verifier.
	Issuer string
}

func (c *Config) validate() error {
	if strings.TrimSpace(c.Issuer) == "" {
		return errors.New("authfallback: Config.Issuer is required")
	}
	if len(c.Audience) == 0 {
		return errors.New("authfallback: Config.Audience is required")
	}
	for _, a := range c.Audience {
		if strings.TrimSpace(a) == "" {
			// jwt accepts a token whose aud is "" against an expected ""
			// audience: an empty entry would accept tokens for no one.
			return fmt.Errorf("authfallback: Config.Audience: invalid entry %q", a)
		}
	}
	if len(c.JWKSURLs) == 0 && c.CacheFile == "" && !c.Discovery && c.Introspection == nil {
		return errors.New("authfallback: Config.JWKSURLs or Config.CacheFile is required")
	}
	for _, u := range c.JWKSURLs {
		if err := checkFetchURL(u); err != nil {
			return fmt.Errorf("authfallback: JWKS URL: %w", err)
		}
	}
	for _, a := range c.Algorithms {
		if !supportedAlgorithm(a) {
			return fmt.Errorf("authfallback: algorithm %q is not allowed (asymmetric algorithms only)", a)
		}
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		return fmt.Errorf("authfallback: Leeway %v out of range [0, %v]", c.Leeway, MaxLeeway)
	}
	if c.RefreshInterval < 0 || c.MaxStaleness < 0 || c.FetchTimeout < 0 || c.UnknownKIDRefreshInterval < 0 || c.MaxTokenSize < 0 || c.MaxDegradedRecords < 0 || c.MaxDegradedRecordsPerSubject < 0 || c.StateFlushInterval < 0 {
		return errors.New("authfallback: negative duration or size in Config")
	}
	if err := c.Policy.validate(); err != nil {
		return err
	}
	if o := c.Offline; o != nil {
		if o.cfg.Issuer == c.Issuer {
			return errors.New("authfallback: Config.Offline must have an issuer of its own, not Config.Issuer")
		}
		shared := false
		for _, a := range o.cfg.Audience {
			shared = shared || contains(c.Audience, a)
		}
		if !shared {
			return errors.New("authfallback: Config.Offline: OfflineConfig.Audience must include one of Config.Audience")
		}
		for _, s := range o.cfg.AllowedScopes {
			if !contains(c.Policy.AllowedScopes, s) {
				return fmt.Errorf("authfallback: Config.Offline allows scope %q, which is not in Policy.AllowedScopes", s)
			}
		}
	}
	if err := c.validateIDP(); err != nil {
		return err
	}
	return nil
}

func (c *Config) maxDegradedRecords() int {
	if c.MaxDegradedRecords > 0 {
		return c.MaxDegradedRecords
	}
	return DefaultMaxDegradedRecords
}

func (c *Config) maxDegradedPerSubject() int {
	if c.MaxDegradedRecordsPerSubject > 0 {
		return c.MaxDegradedRecordsPerSubject
	}
	return DefaultMaxDegradedRecordsPerSubject
}

func (c *Config) refreshInterval() time.Duration {
	if c.RefreshInterval > 0 {
		return c.RefreshInterval
	}
	return DefaultRefreshInterval
}

func (c *Config) unknownKIDInterval() time.Duration {
	if c.UnknownKIDRefreshInterval > 0 {
		return c.UnknownKIDRefreshInterval
	}
	return DefaultUnknownKIDRefreshInterval
}

func (c *Config) maxStaleness() time.Duration {
	if c.MaxStaleness > 0 {
		return c.MaxStaleness
	}
	return DefaultMaxStaleness
}

func (c *Config) fetchTimeout() time.Duration {
	if c.FetchTimeout > 0 {
		return c.FetchTimeout
	}
	return DefaultFetchTimeout
}

func (c *Config) maxTokenSize() int {
	if c.MaxTokenSize > 0 {
		return c.MaxTokenSize
	}
	return DefaultMaxTokenSize
}

func (c *Config) maxCachedTokens() int {
	switch {
	case c.MaxCachedTokens < 0:
		return 0
	case c.MaxCachedTokens == 0:
		return DefaultMaxCachedTokens
	}
	return c.MaxCachedTokens
}

func (c *Config) algorithms() []string {
	if len(c.Algorithms) > 0 {
		return append([]string(nil), c.Algorithms...)
	}
	return []string{"RS256", "ES256", "EdDSA"}
}

func (c *Config) httpClient() *http.Client {
	return fetchClient(c.HTTPClient)
}

func (c *Config) auditLog() *slog.Logger {
	if c.AuditLog != nil {
		return c.AuditLog
	}
	return slog.Default()
}
