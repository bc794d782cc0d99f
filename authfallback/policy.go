package authfallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"
)

// Defaults of [Policy].
const (
	DefaultMaxOfflineDuration = 30 * time.Minute
	DefaultExpiredGrace       = 10 * time.Minute
	DefaultMaxGraceTokens     = 10000
	// ReasonExpiredGrace is the Result.Reason of a token accepted in the
	// grace window after its expiry (see Policy.ExpiredGrace).
	ReasonExpiredGrace = "expired-grace"
)

// Errors of the fallback policy and of revocation. Match them with
// errors.Is.
var (
	// ErrFallbackExpired: the Verifier has been in fallback mode longer
	// than Policy.MaxOfflineDuration, so it accepts nothing degraded any
	// more (fail closed). It matches ErrUnavailable: the token is not at
	// fault, and Handler answers 503 with Retry-After, like a Verifier
	// without keys.
	ErrFallbackExpired = fmt.Errorf("%w: fallback mode lasted longer than Policy.MaxOfflineDuration", ErrUnavailable)
	// ErrOutsidePolicy: a degraded token the policy refuses: an offline
	// token while offline tokens are not accepted, or with a scope outside
	// Policy.AllowedScopes, or a token older than Policy.MaxTokenAge. It
	// matches ErrInvalidToken (401).
	ErrOutsidePolicy = fmt.Errorf("%w: refused by the fallback policy", ErrInvalidToken)
	// ErrRevoked: the token, or every token of its subject issued until a
	// time, is revoked (Config.Revocations). It matches ErrInvalidToken.
	ErrRevoked = fmt.Errorf("%w: token revoked", ErrInvalidToken)
)

var (
	errOfflineNotNow = fmt.Errorf("%w: offline tokens are accepted only in fallback mode", ErrOutsidePolicy)
	errOfflineScope  = fmt.Errorf("%w: offline token scope outside AllowedScopes", ErrOutsidePolicy)
	errTokenTooOld   = fmt.Errorf("%w: token older than MaxTokenAge", ErrOutsidePolicy)
)

// Policy is the fallback policy of a [Verifier]: what it still accepts
// while the IdP is unreachable. It applies to every degraded Result:
// fallback mode (ReasonJWKSUnreachable, ReasonJWKSInvalid), unconfirmed
// keys (ReasonJWKSStale: e.g. a CacheFile older than RefreshInterval while
// the first fetch after a restart hangs, which counts as fallback mode),
// offline tokens, tokens in the expired grace window, and tokens accepted
// while the Revocations source is stale (ReasonRevocationsStale: scopes are
// narrowed; MaxOfflineDuration does not run for it alone). It does not
// apply to tokens verified normally.
//
// The zero value is the safe default: 30 minutes of fallback, no scope at
// all for degraded requests, no limit on token age, 10 minutes of grace.
type Policy struct {
	// MaxOfflineDuration is how long fallback mode may last before
	// degraded acceptance stops and verification fails closed with
	// ErrFallbackExpired (503 with Retry-After: the token is not at fault,
	// the service cannot confirm it). It is measured from the start of
	// fallback mode, or from when the key set in use was due for its
	// refresh if that is earlier, so a restart during an outage does not
	// reset it. If zero, 30 minutes.
	MaxOfflineDuration time.Duration
	// AllowedScopes are the only scopes a degraded Result keeps: its
	// Scopes are the intersection with the token's, and
	// Result.RemovedScopes lists what was stripped. Offline tokens with a
	// scope outside it are refused. If empty, a degraded Result keeps no
	// scope at all: fallback never widens access, so a forgotten setting
	// fails towards less access (authenticated, nothing authorized), never
	// towards all of it. There is no wildcard.
	AllowedScopes []string
	// MaxTokenAge refuses (401) a degraded token whose "iat" is older than
	// this, or that has no "iat", so tokens issued long before the outage
	// are not honoured during it. For an offline token the age is that of
	// the primary token it was exchanged for (ClaimPrimaryIssuedAt). If
	// zero, no limit.
	MaxTokenAge time.Duration
	// ExpiredGrace is how long after its "exp" a token is still accepted
	// in fallback mode, if this Verifier (or, with Config.State, any
	// replica sharing the state) saw it valid before fallback mode began
	// and it expired during fallback mode (its holder could not renew it:
	// the IdP is down). Inside the window, from exp to exp + ExpiredGrace,
	// the token is accepted on every request, marked with
	// ReasonExpiredGrace and narrowed like any degraded Result; the window
	// is never renewed or extended (an offline token is never issued for
	// it), and it ends with fallback mode. A token no replica saw valid
	// never gets grace. If zero, 10 minutes; if negative, no grace.
	ExpiredGrace time.Duration
	// MaxGraceTokens bounds the record of tokens seen valid, which grace
	// requires. If zero, 10000.
	MaxGraceTokens int
}

func (p *Policy) validate() error {
	if p.MaxOfflineDuration < 0 || p.MaxTokenAge < 0 || p.MaxGraceTokens < 0 {
		return errors.New("authfallback: negative duration or size in Config.Policy")
	}
	for _, s := range p.AllowedScopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("authfallback: Policy.AllowedScopes: invalid scope %q", s)
		}
	}
	return nil
}

func (p *Policy) maxOfflineDuration() time.Duration {
	if p.MaxOfflineDuration > 0 {
		return p.MaxOfflineDuration
	}
	return DefaultMaxOfflineDuration
}

func (p *Policy) expiredGrace() time.Duration {
	switch {
	case p.ExpiredGrace < 0:
		return 0
	case p.ExpiredGrace == 0:
		return DefaultExpiredGrace
	}
	return p.ExpiredGrace
}

func (p *Policy) maxGraceTokens() int {
	if p.MaxGraceTokens > 0 {
		return p.MaxGraceTokens
	}
	return DefaultMaxGraceTokens
}

// admit is the policy check point. It runs after every successful
// verification, fresh or from the verified-token cache, with Degraded and
// Reason already set, and before the Result is returned. It refuses
// revoked tokens, applies the fallback policy to degraded Results and
// records them for reconciliation. A degraded res is always a copy made for
// this call, so admit may narrow it in place (never its slices); a
// non-degraded res may be cached and is returned as is.
func (v *Verifier) admit(ctx context.Context, res *Result, ks *keySet, now time.Time) (*Result, error) {
	if r := v.cfg.Revocations; r != nil {
		if revoked, rule := v.revoked(r, res); revoked {
			v.audit.LogAttrs(ctx, slog.LevelInfo, "authfallback: revoked token refused",
				slog.String("token_hash", res.TokenHash), slog.String("rule", rule),
				slog.String("sub", res.Subject), slog.String("jti", res.ID), slog.String("reason", res.Reason))
			return nil, fmt.Errorf("%w (%s)", ErrRevoked, rule)
		}
	}
	if !res.Degraded {
		return res, nil
	}
	if err := v.applyPolicy(res, ks, now); err != nil {
		return nil, err
	}
	res.caller = newCaller(res)
	return res, nil
}

// revoked checks res against r; an offline token also with the "jti" and
// "iat" of its primary token, so that revoking the primary (or its
// subject, as of any time after the primary was issued) revokes the
// offline token too. A primary without iat is checked as such (a subject
// revocation covers it).
func (v *Verifier) revoked(r Revocations, res *Result) (bool, string) {
	if revoked, rule := r.Revoked(res.Subject, res.ID, res.IssuedAt); revoked {
		return true, rule
	}
	if res.Reason == ReasonOfflineToken {
		return r.Revoked(res.Subject, res.primaryID, res.primaryIAT)
	}
	return false, ""
}

// applyPolicy applies the fallback policy to the degraded copy res.
func (v *Verifier) applyPolicy(res *Result, ks *keySet, now time.Time) error {
	p := &v.cfg.Policy
	fb := v.fb.Load()
	// Unconfirmed keys (ReasonJWKSStale) count as fallback mode.
	inFallback := fb != nil || v.unconfirmed(ks, now)
	if inFallback && !now.Before(v.offlineDeadline(fb, ks)) {
		return ErrFallbackExpired
	}
	if res.Reason == ReasonOfflineToken {
		if !inFallback && !v.cfg.AcceptOfflineTokensAlways {
			return errOfflineNotNow
		}
		for _, s := range res.Scopes {
			if !contains(p.AllowedScopes, s) {
				return errOfflineScope
			}
		}
	}
	iat := res.IssuedAt
	if res.Reason == ReasonOfflineToken {
		// An offline token is as old as the primary it was exchanged for.
		iat = res.primaryIAT
	}
	if p.MaxTokenAge > 0 && (iat.IsZero() || now.Sub(iat) > p.MaxTokenAge) {
		return errTokenTooOld
	}
	kept := 0
	for _, s := range res.Scopes {
		if contains(p.AllowedScopes, s) {
			kept++
		}
	}
	if kept < len(res.Scopes) {
		scopes := make([]string, 0, kept)
		var removed []string
		for _, s := range res.Scopes {
			if contains(p.AllowedScopes, s) {
				scopes = append(scopes, s)
			} else {
				removed = append(removed, s)
			}
		}
		res.Scopes, res.RemovedScopes = scopes, removed
	}
	narrowClaims(res)
	return nil
}

// narrowClaims replaces the Claims of the degraded copy res with a copy
// whose scope claims ("scope", "scp") hold res.Scopes, so an application
// that reads scopes from Claims sees no more than Scopes. The token's
// claims map, shared with the verified-token cache, is not modified.
func narrowClaims(res *Result) {
	_, hasScope := res.Claims["scope"]
	_, hasScp := res.Claims["scp"]
	if !hasScope && !hasScp {
		return
	}
	c := maps.Clone(res.Claims)
	if hasScope {
		c["scope"] = strings.Join(res.Scopes, " ")
	}
	if hasScp {
		scp := make([]any, len(res.Scopes))
		for i, s := range res.Scopes {
			scp[i] = s
		}
		c["scp"] = scp
	}
	res.Claims = c
}

// offlineDeadline is when degraded acceptance stops in the fallback state
// fb (nil when only the keys are unconfirmed): MaxOfflineDuration after
// fallback mode began, or after the key set in use was due for a refresh
// if that is earlier (a restart during an outage does not reset the
// clock). Zero when there is neither.
func (v *Verifier) offlineDeadline(fb *fallbackState, ks *keySet) time.Time {
	var start time.Time
	if fb != nil {
		start = fb.since
	}
	if ks != nil {
		if due := ks.fetchedAt.Add(v.refreshInterval()); start.IsZero() || due.Before(start) {
			start = due
		}
	}
	if start.IsZero() {
		return time.Time{}
	}
	return start.Add(v.cfg.Policy.maxOfflineDuration())
}

// outageSince is when the outage began for the grace window, in the
// fallback state fb: when fallback mode began, or when the key set in use
// was due for a refresh if that is earlier. A Verifier started during an
// outage (keys from CacheFile or Config.State, its first refresh failing)
// entered fallback mode only then, but the IdP was already down: its
// window starts with the key set's missed refresh, not with its own start,
// as the offline deadline does (offlineDeadline), so a token that expired
// between the two keeps the grace the replicas running all along give it.
func (v *Verifier) outageSince(fb *fallbackState, ks *keySet) time.Time {
	since := fb.since
	if ks != nil {
		if due := ks.fetchedAt.Add(v.refreshInterval()); due.Before(since) {
			since = due
		}
	}
	return since
}

// graceBook remembers tokens verified normally (by token hash), so that
// one that expires during fallback mode can be accepted in its grace
// window. It is bounded; entries are forgotten after exp + grace.
type graceBook struct {
	max   int
	grace time.Duration
	mu    sync.Mutex
	m     map[[32]byte]*graceEntry
	// miss remembers, until the time it maps to, hashes the shared state
	// did not know, so a flood of expired tokens is not a flood of
	// lookups.
	miss map[[32]byte]time.Time
}

type graceEntry struct {
	res  *Result
	key  *verifyKey
	seen time.Time
	used bool // the first use was audited
}

func newGraceBook(max int, grace time.Duration) *graceBook {
	if grace <= 0 {
		return &graceBook{}
	}
	return &graceBook{max: max, grace: grace, m: make(map[[32]byte]*graceEntry), miss: map[[32]byte]time.Time{}}
}

// remember records a token seen valid (not degraded) at seen, and reports
// whether it was new.
func (g *graceBook) remember(h [32]byte, res *Result, k *verifyKey, seen, now time.Time) bool {
	if g.max <= 0 || res.ExpiresAt.IsZero() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.m[h]; ok {
		return false
	}
	if len(g.m) >= g.max {
		for x, e := range g.m {
			if now.After(e.res.ExpiresAt.Add(g.grace)) {
				delete(g.m, x)
			}
		}
		for x := range g.m {
			if len(g.m) < g.max-g.max/10 || len(g.m) == 0 {
				break
			}
			delete(g.m, x)
		}
	}
	g.m[h] = &graceEntry{res: res, key: k, seen: seen}
	delete(g.miss, h)
	return true
}

// get returns the entry of h; first is true for the first call that finds
// it.
func (g *graceBook) get(h [32]byte) (e graceEntry, first, ok bool) {
	if g.max <= 0 {
		return graceEntry{}, false, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.m[h]
	if p == nil {
		return graceEntry{}, false, false
	}
	first = !p.used
	p.used = true
	return *p, first, true
}

// missed reports whether h is a recent miss of the shared state; noteMiss
// records one.
func (g *graceBook) missed(h [32]byte, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.miss[h]
	return ok && now.Before(until)
}

func (g *graceBook) noteMiss(h [32]byte, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.miss) >= g.max {
		clear(g.miss)
	}
	g.miss[h] = until
}

// tryGrace accepts an expired token if the grace rules allow it: in
// fallback mode, seen valid (by this Verifier or, through Config.State, by
// another) before fallback mode began, expired after it began, at most
// ExpiredGrace ago, and its key still trusted. raw is the token, or "" when
// only this Verifier's own record may be used (the cached path). It
// reports false when grace does not apply.
func (v *Verifier) tryGrace(ctx context.Context, h [32]byte, raw string, ks *keySet, now time.Time) (res *Result, applied bool, err error) {
	fb := v.fb.Load()
	if fb == nil || v.grace.max <= 0 {
		return nil, false, nil
	}
	e, first, ok := v.grace.get(h)
	if !ok && raw != "" && v.cfg.State != nil {
		ok = v.sharedGrace(ctx, h, raw, ks, fb, now)
		if ok {
			e, first, ok = v.grace.get(h)
		}
	}
	if !ok {
		return nil, false, nil
	}
	exp := e.res.ExpiresAt
	since := v.outageSince(fb, ks)
	if !e.seen.Before(since) || !exp.After(since) || now.After(exp.Add(v.grace.grace)) ||
		v.lookup(ks, e.res.KeyID, now) != e.key || v.checkFresh(e.key, ks, now) != nil {
		return nil, false, nil
	}
	d := *e.res
	d.Degraded = true
	d.Reason = ReasonExpiredGrace
	res, err = v.finish(ctx, &d, ks, now)
	attrs := []slog.Attr{
		slog.String("token_hash", d.TokenHash), slog.String("sub", d.Subject),
		slog.Time("expired_at", d.ExpiresAt), slog.Duration("expired_for", now.Sub(d.ExpiresAt)),
		slog.Time("seen_valid_at", e.seen), slog.Time("fallback_since", since),
		slog.Time("grace_until", exp.Add(v.grace.grace)),
	}
	if err != nil {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: expired grace refused", append(attrs, slog.String("error", err.Error()))...)
		return nil, true, err
	}
	if first {
		// Later uses are in the (throttled) degraded acceptance lines.
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: expired grace used", attrs...)
	}
	return res, true, nil
}
