package authfallback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Opaque tokens by introspection (RFC 7662). With Config.Introspection set,
// Verify sends a token that is not shaped like a JWT (see looksLikeJWT) to
// the introspection endpoint and trusts its answer, with the Verifier's
// Issuer, Audience, Policy, Revocations and OnReconcile hook:
//
//   - positive answers are cached by the SHA-256 of the token (never the
//     token), no longer than IntrospectionConfig.CacheTTL and the token's
//     exp; negative answers are not cached;
//   - while the endpoint is unreachable (connection error, timeout, a
//     status other than 200, an unusable answer), a token that this
//     Verifier saw active before the outage began is accepted degraded
//     (ReasonIntrospectionUnreachable, or ReasonExpiredGrace inside the
//     grace window of a token that expired during the outage) under
//     Config.Policy: scopes narrowed to AllowedScopes, MaxTokenAge,
//     MaxOfflineDuration counted from the start of the outage. A token it
//     never saw active gets 503 (ErrIntrospectionUnavailable);
//   - the tokens accepted degraded are kept (in memory only: the raw token
//     is needed to introspect it again, and is never written anywhere) and
//     re-introspected once the endpoint answers again; those now inactive
//     are reported through OnReconcile with FindingInactive.

// Defaults and limits of [IntrospectionConfig].
const (
	DefaultIntrospectionCacheTTL = time.Minute
	DefaultIntrospectionTimeout  = 2 * time.Second
	// MaxintrospectionResponseSize bounds an introspection response.
	MaxintrospectionResponseSize = 64 << 10
	// ReasonIntrospectionUnreachable is the Result.Reason of an opaque
	// token accepted degraded while the introspection endpoint fails.
	ReasonIntrospectionUnreachable = "introspection-unreachable"
	// FindingInactive is the ReconcileEvent.Finding of an opaque token
	// accepted degraded that the introspection endpoint, once back, says is
	// not active (revoked, or never valid), or now refuses (e.g. another
	// audience). Introspection does not say why a token is inactive, so a
	// token that merely expired before reconciliation is reported too:
	// check ExpiresAt.
	FindingInactive = "inactive"
)

// DefaultIntrospectionProbeInterval is the default of
// IntrospectionConfig.ProbeInterval.
const DefaultIntrospectionProbeInterval = time.Second

// Errors of introspection. Match them with errors.Is.
var (
	// ErrInactive: the introspection endpoint says the token is not
	// active. It matches ErrInvalidToken (401).
	ErrInactive = fmt.Errorf("%w: token not active", ErrInvalidToken)
	// ErrIntrospectionUnavailable: the endpoint cannot be reached and the
	// token was not seen active before the outage. It matches
	// ErrUnavailable (503 with Retry-After).
	ErrIntrospectionUnavailable = fmt.Errorf("%w: introspection endpoint unavailable", ErrUnavailable)
	// ErrIntrospectionResponse is the error of an introspection answer that
	// is refused: not a JSON object, too large, without a boolean "active".
	ErrIntrospectionResponse = errors.New("authfallback: introspection response refused")
)

var (
	errNoIntrospectionEndpoint = errors.New("the discovery document names no introspection_endpoint (yet)")
	errIntroClaims             = errors.New("introspection answer refused")
	errIntroNoExp              = fmt.Errorf("%w: active token without a numeric exp", errIntroClaims)
	errIntroAudience           = fmt.Errorf("%w: aud does not name this service", errIntroClaims)
	errIntroSubject            = fmt.Errorf("%w: no string sub", errIntroClaims)
	errIntroTokenType          = fmt.Errorf("%w: not an access token", errIntroClaims)
	errIntroNotYet             = fmt.Errorf("%w: nbf in the future", errIntroClaims)
)

// IntrospectionConfig configures the introspection of opaque tokens (RFC
// 7662) by a [Verifier]; see Config.Introspection.
type IntrospectionConfig struct {
	// URL is the introspection endpoint: https (plain http only to a
	// loopback host). Redirects are not followed. If empty, Config.Discovery
	// must be set, and the "introspection_endpoint" of the discovery
	// document is used (until one is known, opaque tokens get 503).
	URL string
	// ClientID and ClientSecret authenticate this service to the endpoint
	// with HTTP Basic (client_secret_basic, RFC 6749 §2.3.1). Required.
	ClientID     string
	ClientSecret string
	// ClientSecretPost sends the credentials in the form body
	// (client_secret_post) instead of the Authorization header.
	ClientSecretPost bool
	// CacheTTL bounds how long a positive answer is reused, never past the
	// token's exp. If zero, 1 minute. A revocation at the server is seen
	// at most CacheTTL late.
	CacheTTL time.Duration
	// MaxCachedTokens bounds the answer cache. If zero, 10000. If
	// negative, every request is introspected (the record of tokens seen
	// active, for the outage, is still kept; Policy.MaxGraceTokens bounds
	// it).
	MaxCachedTokens int
	// Timeout bounds one call to the endpoint. If zero, 2 seconds.
	Timeout time.Duration
	// AllowMissingAudience accepts an active answer without "aud". If
	// false, "aud" must name one of Config.Audience.
	AllowMissingAudience bool
	// OnOutageEnter is called when calls to the endpoint start failing,
	// OnOutageExit when one succeeds again (Reason
	// ReasonIntrospectionUnreachable, Issuer set). They are not
	// Config.OnFallbackEnter and OnFallbackExit, which follow the key set
	// alone, so that a hook marking "the IdP" up or down is not flipped by
	// the other source. Hooks may be nil, may be called concurrently, are
	// called without any lock held, and must not block.
	OnOutageEnter func(FallbackEvent)
	OnOutageExit  func(FallbackEvent)
	// ProbeInterval is, during an outage, the least time between two calls
	// to the endpoint; the requests in between are answered at once from
	// what was seen before the outage. If zero, 1 second; if negative,
	// every request calls the endpoint.
	ProbeInterval time.Duration
}

func (c *IntrospectionConfig) validate(discovery bool) error {
	if c.URL == "" && !discovery {
		return errors.New("authfallback: Introspection.URL is required without Config.Discovery")
	}
	if c.URL != "" {
		if err := checkFetchURL(c.URL); err != nil {
			return fmt.Errorf("authfallback: Introspection.URL: %w", err)
		}
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		return errors.New("authfallback: Introspection.ClientID and ClientSecret are required")
	}
	if c.CacheTTL < 0 || c.Timeout < 0 {
		return errors.New("authfallback: negative duration in Config.Introspection")
	}
	return nil
}

// IntrospectionStatus is the state of introspection, in [Status].
type IntrospectionStatus struct {
	// Outage is true while calls to the endpoint fail.
	Outage bool
	// OutageSince is when the outage began, zero when not in one.
	OutageSince time.Time
	// FallbackDeadline is when degraded acceptance stops in the current
	// outage (Policy.MaxOfflineDuration), zero when not in one.
	FallbackDeadline time.Time
	// LastError is the error of the last failed call, nil after a success.
	LastError error
	// CachedTokens, SeenTokens and DegradedRecords count the cached
	// answers, the tokens seen active and the tokens accepted degraded not
	// yet reconciled.
	CachedTokens    int
	SeenTokens      int
	DegradedRecords int
}

type introspector struct {
	v        *Verifier
	cfg      IntrospectionConfig
	client   *http.Client
	basic    string
	cacheTTL time.Duration
	maxCache int
	timeout  time.Duration
	probe    time.Duration

	cacheMu sync.RWMutex
	cache   map[[32]byte]*introEntry

	flightMu sync.Mutex
	flight   map[[32]byte]*introFlight

	mu      sync.Mutex
	seen    map[[32]byte]*introEntry
	records map[[32]byte]*introRecord
	missed  int
	outage  *introOutage
	lastErr error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed bool // guarded by mu
}

type introEntry struct {
	res   *Result
	until time.Time // cache: when the answer may no longer be reused
	at    time.Time // seen: when it was last seen active
}

// introFlight is one call to the endpoint that concurrent requests with
// the same token share.
type introFlight struct {
	done chan struct{}
	ans  *introspectionResponse
	err  error
}

type introRecord struct {
	raw         string
	res         *Result
	first, last time.Time
	count       int
}

type introOutage struct {
	since   time.Time
	lastTry time.Time
}

func newIntrospector(v *Verifier) *introspector {
	cfg := *v.cfg.Introspection
	in := &introspector{
		v:        v,
		cfg:      cfg,
		cacheTTL: cfg.CacheTTL,
		maxCache: cfg.MaxCachedTokens,
		timeout:  cfg.Timeout,
		cache:    make(map[[32]byte]*introEntry),
		seen:     make(map[[32]byte]*introEntry),
		records:  make(map[[32]byte]*introRecord),
		flight:   make(map[[32]byte]*introFlight),
	}
	if in.cacheTTL == 0 {
		in.cacheTTL = DefaultIntrospectionCacheTTL
	}
	switch {
	case in.maxCache == 0:
		in.maxCache = DefaultMaxCachedTokens
	case in.maxCache < 0:
		in.maxCache = 0
	}
	if in.timeout == 0 {
		in.timeout = DefaultIntrospectionTimeout
	}
	switch in.probe = cfg.ProbeInterval; {
	case in.probe == 0:
		in.probe = DefaultIntrospectionProbeInterval
	case in.probe < 0:
		in.probe = 0
	}
	c := *v.client
	// A redirected POST would carry the token to another URL.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	in.client = &c
	if !cfg.ClientSecretPost {
		cred := url.QueryEscape(cfg.ClientID) + ":" + url.QueryEscape(cfg.ClientSecret)
		in.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(cred))
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	return in
}

func (in *introspector) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.cancel()
	in.wg.Wait()
}

// verify verifies an opaque token.
func (in *introspector) verify(ctx context.Context, raw string) (*Result, error) {
	now := time.Now()
	// As in Verify: hash the token's bytes in place, without a copy.
	h := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	if in.maxCache > 0 {
		in.cacheMu.RLock()
		e := in.cache[h]
		in.cacheMu.RUnlock()
		if e != nil && now.Before(e.until) {
			return in.admit(ctx, e.res)
		}
	}
	in.mu.Lock()
	o := in.outage
	skip := o != nil && now.Sub(o.lastTry) < in.probe
	if o != nil && !skip {
		o.lastTry = now
	}
	in.mu.Unlock()
	if skip {
		return in.degraded(ctx, raw, h, now)
	}
	ans, err := in.callShared(ctx, h, raw)
	if err != nil {
		if ctx.Err() != nil {
			// The caller gave up: not an outage.
			return nil, fmt.Errorf("%w: %w", ErrIntrospectionUnavailable, context.Cause(ctx))
		}
		in.fail(ctx, err, now)
		return in.degraded(ctx, raw, h, now)
	}
	in.recovered(ctx, now)
	res, err := in.check(ans, h, now)
	if err != nil {
		in.forget(h)
		return nil, err
	}
	in.remember(h, res, now)
	return in.admit(ctx, res)
}

// admit refuses a revoked token (Config.Revocations).
func (in *introspector) admit(ctx context.Context, res *Result) (*Result, error) {
	if r := in.v.cfg.Revocations; r != nil {
		if revoked, rule := r.Revoked(res.Subject, res.ID, res.IssuedAt); revoked {
			in.v.audit.LogAttrs(ctx, slog.LevelInfo, "authfallback: revoked token refused",
				slog.String("token_hash", res.TokenHash), slog.String("rule", rule),
				slog.String("sub", res.Subject), slog.String("jti", res.ID), slog.String("reason", res.Reason))
			return nil, fmt.Errorf("%w (%s)", ErrRevoked, rule)
		}
	}
	return res, nil
}

// degraded answers a token while the endpoint fails: from what was seen
// before the outage, under the Policy.
func (in *introspector) degraded(ctx context.Context, raw string, h [32]byte, now time.Time) (*Result, error) {
	v := in.v
	in.mu.Lock()
	o, s, lastErr := in.outage, in.seen[h], in.lastErr
	var since time.Time
	if o != nil {
		since = o.since
	}
	in.mu.Unlock()
	if o == nil {
		return nil, ErrIntrospectionUnavailable
	}
	if s == nil || s.at.After(since) {
		if lastErr != nil {
			return nil, fmt.Errorf("%w: %w", ErrIntrospectionUnavailable, lastErr)
		}
		return nil, ErrIntrospectionUnavailable
	}
	p := &v.cfg.Policy
	if !now.Before(since.Add(p.maxOfflineDuration())) {
		return nil, ErrFallbackExpired
	}
	reason := ReasonIntrospectionUnreachable
	exp := s.res.ExpiresAt
	if !now.Before(exp.Add(v.cfg.Leeway)) {
		g := p.expiredGrace()
		if g <= 0 || !exp.After(since) || now.After(exp.Add(g)) {
			return nil, invalid(jwt.ErrTokenExpired)
		}
		reason = ReasonExpiredGrace
	}
	d := *s.res
	d.Degraded, d.Reason = true, reason
	if p.MaxTokenAge > 0 && (d.IssuedAt.IsZero() || now.Sub(d.IssuedAt) > p.MaxTokenAge) {
		return nil, errTokenTooOld
	}
	var kept, removed []string
	for _, sc := range d.Scopes {
		if contains(p.AllowedScopes, sc) {
			kept = append(kept, sc)
		} else {
			removed = append(removed, sc)
		}
	}
	d.Scopes, d.RemovedScopes = kept, removed
	narrowClaims(&d)
	d.caller = newCaller(&d)
	res, err := in.admit(ctx, &d)
	if err != nil {
		return nil, err
	}
	if first := in.record(h, raw, res, now); first {
		attrs := []slog.Attr{
			slog.String("token_hash", res.TokenHash), slog.String("reason", res.Reason),
			slog.String("sub", res.Subject), slog.Time("outage_since", since),
		}
		if len(removed) > 0 {
			attrs = append(attrs, slog.String("removed_scopes", strings.Join(removed, " ")))
		}
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: degraded acceptance (introspection)", attrs...)
	}
	return res, nil
}

// record keeps a degraded acceptance for reconciliation and reports
// whether it is the token's first.
func (in *introspector) record(h [32]byte, raw string, res *Result, now time.Time) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if r := in.records[h]; r != nil {
		r.last = now
		r.count++
		return false
	}
	if len(in.records) >= in.v.cfg.maxDegradedRecords() {
		in.missed++
		return true
	}
	in.records[h] = &introRecord{raw: raw, res: res, first: now, last: now, count: 1}
	return true
}

// fail records a failed call and enters the outage.
func (in *introspector) fail(ctx context.Context, err error, now time.Time) {
	in.mu.Lock()
	in.lastErr = err
	entered := in.outage == nil
	if entered {
		in.outage = &introOutage{since: now, lastTry: now}
	}
	in.mu.Unlock()
	if !entered {
		return
	}
	v := in.v
	v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: introspection outage enter",
		slog.String("url", in.cfg.URL), slog.String("error", err.Error()))
	if h := in.cfg.OnOutageEnter; h != nil {
		h(FallbackEvent{Reason: ReasonIntrospectionUnreachable, Since: now, Err: err, Issuer: v.cfg.Issuer})
	}
	in.goBackground(in.probeLoop)
}

// goBackground runs f on a goroutine that Close waits for, unless closed.
func (in *introspector) goBackground(f func()) {
	in.mu.Lock()
	closed := in.closed
	if !closed {
		in.wg.Add(1)
	}
	in.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer in.wg.Done()
		f()
	}()
}

// probeLoop runs during an outage: with backoff (1 s doubling, jittered,
// capped at RefreshInterval) it introspects one of the tokens accepted
// degraded, so that the end of the outage, and the reconciliation, come
// without waiting for a request. It ends with the outage or Close.
func (in *introspector) probeLoop() {
	maxWait := in.v.cfg.refreshInterval()
	wait := time.Second
	for {
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-in.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if wait *= 2; wait > maxWait {
			wait = maxWait
		}
		in.mu.Lock()
		o := in.outage
		raw := ""
		for _, r := range in.records {
			raw = r.raw
			break
		}
		if o != nil && raw != "" {
			o.lastTry = time.Now()
		}
		in.mu.Unlock()
		switch {
		case o == nil:
			return // a request saw the endpoint back
		case raw == "":
			continue // nothing to reconcile; requests probe on their own
		}
		if _, err := in.call(in.ctx, raw); err != nil {
			if in.ctx.Err() != nil {
				return
			}
			in.mu.Lock()
			in.lastErr = err
			in.mu.Unlock()
			continue
		}
		in.recovered(in.ctx, time.Now())
		return
	}
}

// recovered ends the outage after a successful call, and reconciles in
// the background.
func (in *introspector) recovered(ctx context.Context, now time.Time) {
	in.mu.Lock()
	o := in.outage
	in.outage, in.lastErr = nil, nil
	in.mu.Unlock()
	if o == nil {
		return
	}
	v := in.v
	ev := FallbackEvent{Reason: ReasonIntrospectionUnreachable, Since: o.since, Duration: now.Sub(o.since), Issuer: v.cfg.Issuer}
	v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: introspection outage exit",
		slog.Time("since", o.since), slog.Duration("duration", ev.Duration))
	if h := in.cfg.OnOutageExit; h != nil {
		h(ev)
	}
	in.goBackground(func() { in.reconcile(in.ctx) })
}

// reconcile re-introspects every token accepted degraded and reports those
// now inactive (or revoked) through OnReconcile. A call that fails puts
// the rest back for the next recovery.
func (in *introspector) reconcile(ctx context.Context) {
	v := in.v
	in.mu.Lock()
	recs, missed := in.records, in.missed
	in.records, in.missed = make(map[[32]byte]*introRecord), 0
	in.mu.Unlock()
	if len(recs) == 0 && missed == 0 {
		return
	}
	checked, findings := 0, 0
	for h, rec := range recs {
		finding := ""
		ans, err := in.call(ctx, rec.raw)
		if err != nil {
			in.mu.Lock()
			for h2, r2 := range recs {
				if _, done := in.records[h2]; !done {
					in.records[h2] = r2
				}
			}
			in.mu.Unlock()
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile (introspection) interrupted, kept for later",
				slog.Int("checked", checked), slog.String("error", err.Error()))
			return
		}
		delete(recs, h)
		checked++
		if _, cerr := in.check(ans, h, time.Now()); cerr != nil && (!ans.Active || !errors.Is(cerr, jwt.ErrTokenExpired)) {
			finding = FindingInactive
			in.forget(h)
		}
		if finding == "" && v.cfg.Revocations != nil {
			if revoked, rule := v.cfg.Revocations.Revoked(rec.res.Subject, rec.res.ID, rec.res.IssuedAt); revoked {
				finding = rule
			}
		}
		if finding == "" {
			continue
		}
		findings++
		res := rec.res
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile finding",
			slog.String("finding", finding), slog.String("token_hash", res.TokenHash),
			slog.String("sub", res.Subject), slog.String("jti", res.ID), slog.String("reason", res.Reason),
			slog.Time("first_accepted", rec.first), slog.Time("last_accepted", rec.last), slog.Int("accepted", rec.count))
		if hook := v.cfg.OnReconcile; hook != nil {
			hook(ReconcileEvent{
				Finding: finding, Subject: res.Subject, ID: res.ID, IssuedAt: res.IssuedAt, ExpiresAt: res.ExpiresAt,
				TokenHash: res.TokenHash, Reason: res.Reason, Scopes: res.Scopes,
				FirstAccepted: rec.first, LastAccepted: rec.last, Accepted: rec.count,
			})
		}
	}
	lvl := slog.LevelInfo
	if missed > 0 {
		lvl = slog.LevelWarn
	}
	v.audit.LogAttrs(ctx, lvl, "authfallback: reconcile (introspection) done",
		slog.Int("checked", checked), slog.Int("findings", findings), slog.Int("not_recorded", missed))
}

// remember caches a positive answer and records the token as seen active.
func (in *introspector) remember(h [32]byte, res *Result, now time.Time) {
	until := now.Add(in.cacheTTL)
	if res.ExpiresAt.Before(until) {
		until = res.ExpiresAt
	}
	e := &introEntry{res: res, until: until, at: now}
	if in.maxCache > 0 {
		in.cacheMu.Lock()
		if len(in.cache) >= in.maxCache {
			for k, x := range in.cache {
				if !now.Before(x.until) {
					delete(in.cache, k)
				}
			}
			for k := range in.cache {
				if len(in.cache) < in.maxCache-in.maxCache/10 || len(in.cache) == 0 {
					break
				}
				delete(in.cache, k)
			}
		}
		in.cache[h] = e
		in.cacheMu.Unlock()
	}
	max := in.v.cfg.Policy.maxGraceTokens()
	grace := in.v.cfg.Policy.expiredGrace()
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.seen[h]; !ok && len(in.seen) >= max {
		for k, x := range in.seen {
			if now.After(x.res.ExpiresAt.Add(grace)) {
				delete(in.seen, k)
			}
		}
		for k := range in.seen {
			if len(in.seen) < max-max/10 || len(in.seen) == 0 {
				break
			}
			delete(in.seen, k)
		}
	}
	in.seen[h] = e
}

// forget drops what is known of a token found inactive.
func (in *introspector) forget(h [32]byte) {
	in.cacheMu.Lock()
	delete(in.cache, h)
	in.cacheMu.Unlock()
	in.mu.Lock()
	delete(in.seen, h)
	in.mu.Unlock()
}

func (in *introspector) status() IntrospectionStatus {
	in.cacheMu.RLock()
	s := IntrospectionStatus{CachedTokens: len(in.cache)}
	in.cacheMu.RUnlock()
	in.mu.Lock()
	defer in.mu.Unlock()
	if o := in.outage; o != nil {
		s.Outage, s.OutageSince = true, o.since
		s.FallbackDeadline = o.since.Add(in.v.cfg.Policy.maxOfflineDuration())
	}
	s.LastError = in.lastErr
	s.SeenTokens = len(in.seen)
	s.DegradedRecords = len(in.records)
	return s
}

// callShared is call, single-flight per token: concurrent requests that
// present one token (e.g. a burst when the cache entry ends, or when the
// endpoint comes back) make one call. The call does not end with the
// context of the request that started it (only with its own timeout), so
// that a client that goes away does not fail the others.
func (in *introspector) callShared(ctx context.Context, h [32]byte, raw string) (*introspectionResponse, error) {
	in.flightMu.Lock()
	if f := in.flight[h]; f != nil {
		in.flightMu.Unlock()
		select {
		case <-f.done:
			return f.ans, f.err
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	f := &introFlight{done: make(chan struct{})}
	in.flight[h] = f
	in.flightMu.Unlock()
	f.ans, f.err = in.call(context.WithoutCancel(ctx), raw)
	in.flightMu.Lock()
	delete(in.flight, h)
	in.flightMu.Unlock()
	close(f.done)
	return f.ans, f.err
}

// call POSTs raw to the endpoint and parses the answer.
func (in *introspector) call(ctx context.Context, raw string) (*introspectionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, in.timeout)
	defer cancel()
	form := url.Values{"token": {raw}, "token_type_hint": {"access_token"}}
	if in.cfg.ClientSecretPost {
		form.Set("client_id", in.cfg.ClientID)
		form.Set("client_secret", in.cfg.ClientSecret)
	}
	u := in.cfg.URL
	if u == "" {
		if doc, ok := in.v.Discovery(); ok {
			u = doc.IntrospectionEndpoint
		}
		if u == "" {
			return nil, &FetchError{URL: discoveryURL(in.v.cfg.Issuer), Err: errNoIntrospectionEndpoint}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &FetchError{URL: u, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if in.basic != "" {
		req.Header.Set("Authorization", in.basic)
	}
	resp, err := in.client.Do(req)
	if err != nil {
		return nil, &FetchError{URL: u, Err: err}
	}
	defer httpx.DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Err: fmt.Errorf("status %d", resp.StatusCode)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxintrospectionResponseSize+1))
	if err != nil {
		return nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Err: err}
	}
	ans, err := parseIntrospectionResponse(b)
	if err != nil {
		return nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Invalid: true, Err: err}
	}
	return ans, nil
}

// introspectionResponse is a parsed RFC 7662 introspection answer.
type introspectionResponse struct {
	// Active is the "active" member.
	Active bool
	// Claims are all members of the answer.
	Claims map[string]any
}

// parseIntrospectionResponse parses an RFC 7662 §2.2 introspection answer:
// one JSON object, at most MaxintrospectionResponseSize bytes, with a
// boolean "active". Errors match ErrIntrospectionResponse. The members of
// an active answer are checked by the Verifier, not here.
func parseIntrospectionResponse(b []byte) (*introspectionResponse, error) {
	if len(b) > MaxintrospectionResponseSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrIntrospectionResponse, MaxintrospectionResponseSize)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrIntrospectionResponse)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIntrospectionResponse, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrIntrospectionResponse)
	}
	active, ok := m["active"].(bool)
	if !ok {
		return nil, fmt.Errorf("%w: no boolean \"active\"", ErrIntrospectionResponse)
	}
	return &introspectionResponse{Active: active, Claims: m}, nil
}

// check turns an answer into a Result: active, an access token, exp in the
// future, nbf passed, iss (if present) the Verifier's, aud naming it, a
// string sub.
func (in *introspector) check(ans *introspectionResponse, h [32]byte, now time.Time) (*Result, error) {
	if !ans.Active {
		return nil, ErrInactive
	}
	return checkIntrospectionClaims(ans.Claims, &in.v.cfg, in.cfg.AllowMissingAudience, h, now)
}

func checkIntrospectionClaims(src map[string]any, cfg *Config, allowNoAud bool, h [32]byte, now time.Time) (*Result, error) {
	c := make(jwt.MapClaims, len(src))
	for k, x := range src {
		if k != "active" {
			c[k] = x
		}
	}
	if tt, ok := c["token_type"]; ok {
		s, isStr := tt.(string)
		if !isStr || strings.EqualFold(s, "refresh_token") {
			return nil, invalid(errIntroTokenType)
		}
	}
	if tu, ok := c["token_use"]; ok && tu != "access_token" {
		return nil, invalid(errIntroTokenType)
	}
	exp, ok := numericDate(c["exp"])
	if !ok {
		return nil, invalid(errIntroNoExp)
	}
	if !now.Before(exp.Add(cfg.Leeway)) {
		return nil, invalid(jwt.ErrTokenExpired)
	}
	if x, present := c["nbf"]; present {
		nbf, ok := numericDate(x)
		if !ok || now.Before(nbf.Add(-cfg.Leeway)) {
			return nil, invalid(errIntroNotYet)
		}
	}
	if x, present := c["iat"]; present {
		if _, ok := numericDate(x); !ok {
			return nil, invalid(fmt.Errorf("%w: non-numeric iat", errIntroClaims))
		}
	}
	if x, present := c["iss"]; present {
		if s, ok := x.(string); !ok || s != cfg.Issuer {
			return nil, invalid(errIssuer)
		}
	} else {
		c["iss"] = cfg.Issuer
	}
	if s, ok := c["sub"].(string); !ok || s == "" {
		return nil, invalid(errIntroSubject)
	}
	for _, name := range []string{"jti", "scope", "client_id", "username"} {
		if x, present := c[name]; present {
			if _, ok := x.(string); !ok {
				return nil, invalid(fmt.Errorf("%w: non-string %s", errIntroClaims, name))
			}
		}
	}
	if x, present := c["cnf"]; present {
		if _, ok := x.(map[string]any); !ok {
			return nil, invalid(fmt.Errorf("%w: cnf is not an object", errIntroClaims))
		}
	}
	switch aud := c["aud"].(type) {
	case nil:
		if _, present := c["aud"]; present || !allowNoAud {
			return nil, invalid(errIntroAudience)
		}
	case string:
		if !contains(cfg.Audience, aud) {
			return nil, invalid(errIntroAudience)
		}
	case []any:
		found := false
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return nil, invalid(errIntroAudience)
			}
			found = found || contains(cfg.Audience, s)
		}
		if !found {
			return nil, invalid(errIntroAudience)
		}
	default:
		return nil, invalid(errIntroAudience)
	}
	return newResult(c, "", h), nil
}

// numericDate reads a JSON number as a NumericDate (seconds since the
// epoch), refusing what is not finite or out of range.
func numericDate(x any) (time.Time, bool) {
	f, ok := x.(float64)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}
