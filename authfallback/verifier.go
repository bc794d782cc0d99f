package authfallback

// Seams for the fallback policy, offline tokens and revocation (issue 4):
//
//   - Policy check point: every successful verification, a fresh one or a
//     verified-token cache hit, passes through (*Verifier).admit (policy.go)
//     before the Result is returned. admit receives the Result (Degraded and
//     Reason already set) and the time, and may refuse it or return a
//     narrowed copy (AllowedScopes, MaxOfflineDuration, grace windows,
//     revocation list). Results in the cache are never modified.
//   - Fallback time: (*Verifier).fallback() returns the current fallback
//     state (nil when not in fallback mode) with the time fallback mode began
//     and its reason; Status exposes it with the key age and last error.
//   - Other trusted key sources: (*Verifier).setTrustedKeys installs keys
//     (e.g. offline Ed25519 keys) next to the JWKS. A trusted key carries the
//     issuer its tokens must name and the degraded reason ("offline-token")
//     every token it verifies is marked with; MaxStaleness does not apply to
//     it. Lookup is by kid, JWKS first, so trusted kids must not collide with
//     the IdP's (use a prefix).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
)

// Degraded reasons set in [Result.Reason] and [Status.Reason].
const (
	// ReasonJWKSUnreachable: refreshes of the key set fail (connection,
	// timeout, non-200 status); tokens are verified with the last-known-good
	// keys.
	ReasonJWKSUnreachable = "jwks-unreachable"
	// ReasonJWKSInvalid: the JWKS endpoint answers with an empty or unusable
	// key set, which was refused; tokens are verified with the
	// last-known-good keys.
	ReasonJWKSInvalid = "jwks-invalid"
	// ReasonJWKSStale: no refresh has failed yet, but the key set in use is
	// older than two RefreshIntervals, e.g. loaded from an old CacheFile
	// while the first fetch is still under way.
	ReasonJWKSStale = "jwks-stale"
)

// Verifier verifies JWTs against a last-known-good key set that it keeps
// fresh in the background. It is safe for concurrent use. Close stops its
// refresh goroutine.
type Verifier struct {
	cfg        Config
	algs       []string
	parser     *jwt.Parser
	client     *http.Client
	audit      *slog.Logger
	maxToken   int
	staleAfter time.Duration

	keys    atomic.Pointer[keySet]
	trusted atomic.Pointer[map[string]*verifyKey]
	fb      atomic.Pointer[fallbackState]
	cache   *tokenCache

	// refreshMu makes refreshes single-flight.
	refreshMu sync.Mutex
	// mu guards the fields below.
	mu          sync.Mutex
	failures    int
	lastErr     error
	lastAttempt time.Time
	nextAttempt atomic.Int64 // unix nanoseconds of the next scheduled refresh

	lastKick atomic.Int64 // unix nanoseconds of the last unknown-kid refresh
	kick     chan struct{}

	closeOnce sync.Once
	closing   chan struct{}
	cancel    context.CancelFunc
	ctx       context.Context
	loopDone  chan struct{}
}

// fallbackState is the state of fallback mode; nil when not in it.
type fallbackState struct {
	since  time.Time
	reason string
}

// New returns a Verifier for cfg. It loads Config.CacheFile if there is one
// (and then refreshes in the background), otherwise it fetches the key set
// once before returning. An unreachable IdP is not an error: the Verifier
// starts, answers ErrNoKeys until a fetch succeeds, and keeps trying with
// backoff. New fails only on an invalid Config.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.JWKSURLs = append([]string(nil), cfg.JWKSURLs...)
	cfg.Audience = append([]string(nil), cfg.Audience...)
	v := &Verifier{
		cfg:        cfg,
		algs:       cfg.algorithms(),
		client:     cfg.httpClient(),
		audit:      cfg.auditLog(),
		maxToken:   cfg.maxTokenSize(),
		staleAfter: cfg.maxStaleness(),
		cache:      newTokenCache(cfg.maxCachedTokens()),
		kick:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		loopDone:   make(chan struct{}),
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithAudience(cfg.Audience...),
	)
	v.ctx, v.cancel = context.WithCancel(context.Background())

	now := time.Now()
	if cfg.CacheFile != "" {
		ks, err := readCacheFile(cfg.CacheFile, v.algs, now)
		switch {
		case err == nil:
			v.keys.Store(ks)
			v.audit.LogAttrs(v.ctx, slog.LevelInfo, "authfallback: key set loaded from cache file",
				slog.Int("keys", len(ks.byKID)), slog.Duration("key_age", now.Sub(ks.fetchedAt)))
		case errors.Is(err, fs.ErrNotExist):
		default:
			v.audit.LogAttrs(v.ctx, slog.LevelWarn, "authfallback: cache file refused", slog.String("error", err.Error()))
		}
	}
	if len(cfg.JWKSURLs) == 0 {
		close(v.loopDone)
		return v, nil
	}
	first := time.Duration(0)
	if v.keys.Load() == nil {
		first, _ = v.refresh(v.ctx)
	}
	go v.loop(first)
	return v, nil
}

// Close stops the background refresh and waits for it to end. It always
// returns nil.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		close(v.closing)
		v.cancel()
	})
	<-v.loopDone
	return nil
}

// Verify verifies a raw JWT (without "Bearer ") and returns what it
// established. Errors match ErrNoToken, ErrInvalidToken or ErrUnavailable
// (errors.Is). A token verified while the Verifier is in fallback mode, or by
// a key of another trusted source, has Degraded set and a Reason.
//
// The returned Result may be shared with other calls for the same token and
// must not be modified.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Result, error) {
	if raw == "" {
		return nil, ErrNoToken
	}
	if len(raw) > v.maxToken {
		return nil, invalid(errTokenTooLarge)
	}
	now := time.Now()
	ks := v.keys.Load()
	// Hash the token's bytes in place: []byte(raw) would copy it to the
	// heap, and sha256.Sum256 neither keeps nor modifies its argument.
	h := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	if e := v.cache.get(h); e != nil {
		if e.validAt(now) {
			if k := v.lookup(ks, e.res.KeyID); k == e.key {
				return v.accept(ctx, e.res, k, ks, now)
			}
		}
		v.cache.remove(h)
	}
	return v.verifySlow(ctx, raw, h, ks, now)
}

func (v *Verifier) verifySlow(ctx context.Context, raw string, h [32]byte, ks *keySet, now time.Time) (*Result, error) {
	if ks == nil && v.trusted.Load() == nil {
		return nil, ErrNoKeys
	}
	var used *verifyKey
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		// The parser has checked alg against the allow-list already.
		kid, _ := t.Header["kid"].(string)
		if kid == "" || len(kid) > MaxKIDLength {
			return nil, errBadKID
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errCrit
		}
		k := v.lookup(ks, kid)
		if k == nil {
			if ks == nil {
				return nil, ErrNoKeys
			}
			v.kickUnknownKID()
			return nil, ErrUnknownKeyID
		}
		if k.alg != t.Method.Alg() {
			return nil, errAlgMismatch
		}
		if err := v.checkFresh(k, ks, now); err != nil {
			return nil, err
		}
		used = k
		return k.pub, nil
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, invalid(err)
	}
	iss, _ := claims["iss"].(string)
	want := v.cfg.Issuer
	if used.issuer != "" {
		want = used.issuer
	}
	if iss != want {
		return nil, invalid(errIssuer)
	}
	res := newResult(claims, used.kid, h)
	if e := v.cache.newEntry(res, used, claims, v.cfg.Leeway); e != nil {
		v.cache.put(h, e)
	}
	return v.accept(ctx, res, used, ks, now)
}

// accept marks res degraded when it has to be, runs the policy check point
// and writes the audit event of a degraded acceptance.
func (v *Verifier) accept(ctx context.Context, res *Result, k *verifyKey, ks *keySet, now time.Time) (*Result, error) {
	if err := v.checkFresh(k, ks, now); err != nil {
		return nil, err
	}
	reason := k.reason
	if reason == "" {
		reason = v.degradedReason(ks, now)
	}
	if reason != "" {
		d := *res
		d.Degraded = true
		d.Reason = reason
		res = &d
	}
	res, err := v.admit(ctx, res, now)
	if err != nil {
		return nil, err
	}
	if res.Degraded {
		var age time.Duration
		if ks != nil {
			age = now.Sub(ks.fetchedAt)
		}
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: degraded acceptance",
			slog.String("token_hash", res.TokenHash),
			slog.String("reason", res.Reason),
			slog.Duration("key_age", age),
			slog.String("kid", res.KeyID),
			slog.String("sub", res.Subject))
	}
	return res, nil
}

// degradedReason is why a token verified by a JWKS key is degraded now, ""
// if it is not.
func (v *Verifier) degradedReason(ks *keySet, now time.Time) string {
	if fb := v.fb.Load(); fb != nil {
		return fb.reason
	}
	if ks != nil && now.Sub(ks.fetchedAt) > 2*v.cfg.refreshInterval() {
		return ReasonJWKSStale
	}
	return ""
}

// checkFresh fails closed when k is a JWKS key and the set is older than
// MaxStaleness.
func (v *Verifier) checkFresh(k *verifyKey, ks *keySet, now time.Time) error {
	if k.issuer != "" || ks == nil {
		return nil
	}
	if now.Sub(ks.fetchedAt) > v.staleAfter {
		return ErrKeysTooStale
	}
	return nil
}

// lookup finds kid in the key set, then in the other trusted sources.
func (v *Verifier) lookup(ks *keySet, kid string) *verifyKey {
	if k := ks.lookup(kid); k != nil {
		return k
	}
	if t := v.trusted.Load(); t != nil {
		return (*t)[kid]
	}
	return nil
}

// setTrustedKeys replaces the keys of sources other than the JWKS (seam for
// offline tokens). Every key must have issuer set.
func (v *Verifier) setTrustedKeys(keys []*verifyKey) {
	if len(keys) == 0 {
		v.trusted.Store(nil)
		return
	}
	m := make(map[string]*verifyKey, len(keys))
	for _, k := range keys {
		if k.issuer == "" {
			panic("authfallback: trusted key without issuer")
		}
		m[k.kid] = k
	}
	v.trusted.Store(&m)
}

// fallback returns the current fallback state, nil when not in fallback mode.
func (v *Verifier) fallback() *fallbackState { return v.fb.Load() }

func newResult(claims jwt.MapClaims, kid string, h [32]byte) *Result {
	r := &Result{Claims: claims, KeyID: kid, TokenHash: hex.EncodeToString(h[:])}
	r.Subject, _ = claims["sub"].(string)
	r.Issuer, _ = claims["iss"].(string)
	r.ID, _ = claims["jti"].(string)
	if t, err := claims.GetExpirationTime(); err == nil && t != nil {
		r.ExpiresAt = t.Time
	}
	if t, err := claims.GetIssuedAt(); err == nil && t != nil {
		r.IssuedAt = t.Time
	}
	r.Scopes = scopes(claims["scope"])
	if r.Scopes == nil {
		r.Scopes = scopes(claims["scp"])
	}
	return r
}

// scopes reads a scope claim: a space-separated string (RFC 8693 "scope")
// or an array of strings ("scp").
func scopes(c any) []string {
	switch s := c.(type) {
	case string:
		return strings.Fields(s)
	case []any:
		var out []string
		for _, x := range s {
			if str, ok := x.(string); ok && str != "" {
				out = append(out, str)
			}
		}
		return out
	}
	return nil
}
