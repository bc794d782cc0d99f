package authfallback

// How a verification flows: Verify hashes the token and looks it up in the
// verified-token cache; a miss is parsed and checked by verifySlow (JWKS
// keys, then the keys of Config.Offline). Both end in accept, which marks
// the Result degraded when it has to be, and finish, which runs the policy
// check point admit (policy.go: revocation, fallback policy, record for
// reconciliation) and writes the audit event. An expired token gets one
// more chance through tryGrace (policy.go). reconcile (reconcile.go) runs
// after the first successful refresh that follows degraded acceptances.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	// unconfirmed: loaded from a CacheFile older than one RefreshInterval
	// (no fetch of this process has confirmed it yet, e.g. the first fetch
	// after a restart hangs, or there is no JWKSURL at all), or fetched
	// more than two RefreshIntervals ago. It counts as fallback mode for
	// the Policy: scopes are narrowed, offline tokens are accepted, and
	// Policy.MaxOfflineDuration runs from when the keys were due for a
	// refresh (fetched_at + RefreshInterval).
	ReasonJWKSStale = "jwks-stale"
)

// Verifier verifies JWTs against a last-known-good key set that it keeps
// fresh in the background. It is safe for concurrent use. Close stops its
// refresh goroutine.
type Verifier struct {
	cfg        Config
	algs       []string
	parser     *jwt.Parser
	parserOpts []jwt.ParserOption
	client     *http.Client
	audit      *slog.Logger
	maxToken   int
	staleAfter time.Duration

	keys    atomic.Pointer[keySet]
	fb      atomic.Pointer[fallbackState]
	cache   *tokenCache
	grace   *graceBook
	records *degradedRecord
	st      *stateSync // nil without Config.State
	// primaryKeys maps the kids of the last set the primary JWKS URL
	// served to their fingerprints; guarded by refreshMu.
	primaryKeys map[string]string
	// started is closed when New returns: the refresh goroutine reports
	// the first fetch (hooks) only then.
	started chan struct{}
	// unsubscribe removes the OnRevocation hook from the source.
	unsubscribe func()

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
	resched  chan struct{} // a manual Refresh changed the schedule

	closeOnce sync.Once
	closing   chan struct{}
	cancel    context.CancelFunc
	ctx       context.Context
	loopDone  chan struct{}

	// idp is the state of discovery, introspection and DPoP (idp.go).
	idp idpState
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
	cfg.Policy.AllowedScopes = append([]string(nil), cfg.Policy.AllowedScopes...)
	v := &Verifier{
		cfg:         cfg,
		algs:        cfg.algorithms(),
		client:      cfg.httpClient(),
		audit:       cfg.auditLog(),
		maxToken:    cfg.maxTokenSize(),
		staleAfter:  cfg.maxStaleness(),
		cache:       newTokenCache(cfg.maxCachedTokens()),
		grace:       newGraceBook(cfg.Policy.maxGraceTokens(), cfg.Policy.expiredGrace()),
		records:     newDegradedRecord(cfg.maxDegradedRecords(), cfg.maxDegradedPerSubject()),
		unsubscribe: func() {},
		kick:        make(chan struct{}, 1),
		resched:     make(chan struct{}, 1),
		closing:     make(chan struct{}),
		loopDone:    make(chan struct{}),
	}
	methods := v.algs
	if cfg.Offline != nil {
		// Offline keys are EdDSA or ES256; every key stays bound to its
		// own algorithm, and JWKS keys to v.algs.
		methods = append([]string(nil), methods...)
		for _, a := range []string{jwt.SigningMethodEdDSA.Alg(), jwt.SigningMethodES256.Alg()} {
			if !contains(methods, a) {
				methods = append(methods, a)
			}
		}
	}
	v.parserOpts = []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithAudience(cfg.Audience...),
	}
	v.parser = jwt.NewParser(v.parserOpts...)
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.initIDP()
	if h := cfg.OnRevocation; h != nil {
		if s, ok := cfg.Revocations.(revocationNotifier); ok {
			v.unsubscribe = s.subscribe(h)
		}
	}

	now := time.Now()
	if cfg.CacheFile != "" {
		ks, err := readCacheFile(cfg.CacheFile, v.algs, v.cacheBinding(), now)
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
	if cfg.State != nil {
		if ks := v.loadSharedKeys(v.ctx, v.keys.Load(), now); ks != nil {
			v.keys.Store(ks)
			v.audit.LogAttrs(v.ctx, slog.LevelInfo, "authfallback: key set loaded from shared state",
				slog.Int("keys", len(ks.byKID)), slog.Duration("key_age", now.Sub(ks.fetchedAt)))
		}
		v.st = &stateSync{done: make(chan struct{})}
		go v.flushLoop()
	}
	if len(cfg.JWKSURLs) == 0 && !cfg.Discovery {
		close(v.loopDone)
		return v, nil
	}
	if ks := v.keys.Load(); ks != nil {
		v.checkPrimaryKeys(ks)
	}
	first := time.Duration(0)
	var notify func()
	if v.keys.Load() == nil {
		// The audit events and hooks of this first fetch run on the
		// refresh goroutine, after New has returned.
		first, notify, _ = v.refreshLocked(v.ctx, false)
	}
	if v.nextAttempt.Load() == 0 {
		v.nextAttempt.Store(now.Add(first).UnixNano())
	}
	v.started = make(chan struct{})
	defer close(v.started)
	go v.loop(first, notify)
	return v, nil
}

// cacheBinding is what the CacheFile is tied to.
func (v *Verifier) cacheBinding() cacheBinding {
	return cacheBinding{issuer: v.cfg.Issuer, jwksURLs: v.cfg.JWKSURLs}
}

// Close stops the background refresh and waits for it to end; with
// Config.State it writes what is queued first (bounded by FetchTimeout).
// It always returns nil.
func (v *Verifier) Close() error {
	v.closeOnce.Do(func() {
		close(v.closing)
		if v.st != nil {
			<-v.st.done
		}
		v.cancel()
		v.unsubscribe()
		v.closeIDP()
	})
	<-v.loopDone
	return nil
}

// Verify verifies a raw JWT (without "Bearer ") and returns what it
// established. Errors match ErrNoToken, ErrInvalidToken or ErrUnavailable
// (errors.Is); among them ErrRevoked and ErrOutsidePolicy match
// ErrInvalidToken, ErrFallbackExpired matches ErrUnavailable. A token
// verified while the Verifier is in fallback mode, an offline token, or a
// token in its expired grace window has Degraded set and a Reason, and its
// Scopes narrowed by Config.Policy.
//
// The returned Result may be shared with other calls for the same token and
// must not be modified.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Result, error) {
	now := time.Now()
	if raw == "" {
		return v.done(ctx, nil, ErrNoToken, false, now)
	}
	if len(raw) > v.maxToken {
		return v.done(ctx, nil, invalid(errTokenTooLarge), false, now)
	}
	if v.idp.intro != nil {
		switch v.introspects(raw) {
		case checkIntrospect:
			res, err := v.idp.intro.verify(ctx, raw)
			return v.done(ctx, res, err, false, now)
		case checkRefuse:
			return v.done(ctx, nil, invalid(errIssuer), false, now)
		}
	}
	ks := v.keys.Load()
	// Hash the token's bytes in place: []byte(raw) would copy it to the
	// heap, and sha256.Sum256 neither keeps nor modifies its argument.
	h := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	if e := v.cache.get(h); e != nil {
		if e.validAt(now) {
			if k := v.lookup(ks, e.res.KeyID, now); k == e.key {
				res, err := v.accept(ctx, e.res, k, ks, now)
				return v.done(ctx, res, err, true, now)
			}
		} else if !now.Before(e.notAfter) && v.fb.Load() != nil {
			// Expired in fallback mode: its grace window, if it has one,
			// without parsing it again.
			if res, applied, err := v.tryGrace(ctx, h, "", ks, now); applied {
				return v.done(ctx, res, err, true, now)
			}
		}
		v.cache.remove(h)
	}
	res, err := v.verifySlow(ctx, raw, h, ks, now)
	return v.done(ctx, res, err, false, now)
}

// done reports a verification to Config.OnVerify, if set.
func (v *Verifier) done(ctx context.Context, res *Result, err error, cached bool, start time.Time) (*Result, error) {
	if v.cfg.OnVerify != nil {
		v.reportVerify(ctx, res, err, cached, start)
	}
	return res, err
}

func (v *Verifier) verifySlow(ctx context.Context, raw string, h [32]byte, ks *keySet, now time.Time) (*Result, error) {
	if ks == nil && v.cfg.Offline == nil {
		return nil, ErrNoKeys
	}
	claims, used, err := v.parseToken(raw, ks, now, v.parser)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		if errors.Is(err, jwt.ErrTokenExpired) {
			if res, applied, gerr := v.tryGrace(ctx, h, raw, ks, now); applied {
				return res, gerr
			}
		}
		return nil, err
	}
	res := newResult(claims, used.kid, h)
	res.keyFP = used.fp
	if used.offline != nil {
		res.primaryID, res.primaryIAT, _ = offlinePrimaryClaims(claims) // checked above
		// An offline token stands for its primary: only the Verifier of the
		// primary's issuer accepts it, and the caller is that issuer's.
		if piss, _ := claims[ClaimPrimaryIssuer].(string); piss != v.cfg.Issuer {
			return nil, offlineInvalid(fmt.Errorf("%s is not this verifier's issuer", ClaimPrimaryIssuer))
		}
		res.primaryIssuer = v.cfg.Issuer
	}
	if e := v.cache.newEntry(res, used, claims, v.cfg.Leeway); e != nil {
		v.cache.put(h, e)
	}
	out, err := v.accept(ctx, res, used, ks, now)
	if err == nil && !out.Degraded {
		if v.grace.remember(h, res, used, now, now) {
			v.queueSeen(res, now)
		}
	}
	return out, err
}

// parseToken parses and checks raw with parser (v.parser, or one with
// another clock for a grace record): members, header, signature with a
// trusted key, claims. Errors match ErrInvalidToken or ErrUnavailable.
func (v *Verifier) parseToken(raw string, ks *keySet, now time.Time, parser *jwt.Parser) (jwt.MapClaims, *verifyKey, error) {
	if err := checkTokenMembers(raw); err != nil {
		return nil, nil, invalid(err)
	}
	var used *verifyKey
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		// The parser has checked alg against the allow-list already.
		kid, _ := t.Header["kid"].(string)
		if kid == "" || len(kid) > MaxKIDLength {
			return nil, errBadKID
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errCrit
		}
		k := v.lookup(ks, kid, now)
		if k == nil {
			if ks == nil {
				return nil, ErrNoKeys
			}
			v.kickUnknownKID()
			if o := v.cfg.Offline; o != nil {
				o.kickUnknown()
			}
			if v.degradedReason(ks, now) != "" {
				// In fallback mode an unknown kid is likely a key rotated
				// in while the JWKS is unreachable: the token may be
				// good, the service cannot tell (503, not 401).
				return nil, errUnknownKIDInFallback
			}
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
			return nil, nil, err
		}
		return nil, nil, invalid(err)
	}
	if err := checkStringClaims(claims); err != nil {
		return nil, nil, invalid(err)
	}
	iss, _ := claims["iss"].(string)
	want := v.cfg.Issuer
	if used.issuer != "" {
		want = used.issuer
	}
	if iss != want {
		return nil, nil, invalid(errIssuer)
	}
	if used.offline != nil {
		if err := used.offline.checkOfflineClaims(claims); err != nil {
			return nil, nil, err
		}
	}
	return claims, used, nil
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
	if reason == "" && v.revocationsStale() {
		reason = ReasonRevocationsStale
	}
	if reason != "" {
		d := *res
		d.Degraded = true
		d.Reason = reason
		res = &d
	}
	return v.finish(ctx, res, ks, now)
}

// finish runs the policy check point and writes the audit event of a
// degraded acceptance.
func (v *Verifier) finish(ctx context.Context, res *Result, ks *keySet, now time.Time) (*Result, error) {
	in := res
	res, err := v.admit(ctx, res, ks, now)
	if err != nil {
		if in.Degraded && !errors.Is(err, ErrRevoked) {
			v.audit.LogAttrs(ctx, slog.LevelInfo, "authfallback: degraded token refused by policy",
				slog.String("token_hash", in.TokenHash), slog.String("reason", in.Reason),
				slog.String("sub", in.Subject), slog.String("error", err.Error()))
		}
		return nil, err
	}
	if res.Degraded {
		logNow, count, recorded := v.records.add(res, v.cfg.Issuer, now.Add(v.recordTTL()), now)
		if !logNow {
			return res, nil
		}
		var age time.Duration
		if ks != nil {
			age = now.Sub(ks.fetchedAt)
		}
		attrs := []slog.Attr{
			slog.String("token_hash", res.TokenHash),
			slog.String("reason", res.Reason),
			slog.Duration("key_age", age),
			slog.String("kid", res.KeyID),
			slog.String("sub", res.Subject),
			slog.Int("count", count),
		}
		if !recorded {
			attrs = append(attrs, slog.Bool("recorded", false))
		}
		if res.ID != "" {
			attrs = append(attrs, slog.String("jti", res.ID))
		}
		if len(res.RemovedScopes) > 0 {
			attrs = append(attrs, slog.String("removed_scopes", strings.Join(res.RemovedScopes, " ")))
		}
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: degraded acceptance", attrs...)
	}
	return res, nil
}

// degradedReason is why a token verified by a JWKS key is degraded now, ""
// if it is not.
func (v *Verifier) degradedReason(ks *keySet, now time.Time) string {
	if fb := v.fb.Load(); fb != nil {
		return fb.reason
	}
	if v.unconfirmed(ks, now) {
		return ReasonJWKSStale
	}
	return ""
}

// unconfirmed reports whether the key set ks is stale: loaded from the
// CacheFile and older than one RefreshInterval, or fetched more than two
// RefreshIntervals ago (a refresh is overdue; a failed one enters fallback
// mode).
func (v *Verifier) unconfirmed(ks *keySet, now time.Time) bool {
	if ks == nil {
		return false
	}
	limit := 2 * v.cfg.refreshInterval()
	if ks.fromFile {
		limit = v.cfg.refreshInterval()
	}
	return now.Sub(ks.fetchedAt) > limit
}

// revocationsStale reports whether Config.Revocations says it is stale.
func (v *Verifier) revocationsStale() bool {
	s, ok := v.cfg.Revocations.(staleReporter)
	return ok && s.Stale()
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

// lookup finds kid in the key set, then among the keys of Config.Offline
// trusted at now.
func (v *Verifier) lookup(ks *keySet, kid string, now time.Time) *verifyKey {
	if k := ks.lookup(kid); k != nil {
		return k
	}
	if o := v.cfg.Offline; o != nil {
		return o.trustedKey(kid, now)
	}
	return nil
}

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
	r.caller = newCaller(r)
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
