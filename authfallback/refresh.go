package authfallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Backoff of failed refreshes: base doubling per failure, equal jitter,
// capped at RefreshInterval.
const refreshBackoffBase = time.Second

// FetchError is the error of one failed fetch of a key set.
type FetchError struct {
	// URL is the JWKS URL fetched.
	URL string
	// StatusCode is the HTTP status, 0 if no response arrived.
	StatusCode int
	// Invalid is set when the response was 200 but the key set was refused
	// (unparsable, empty, no usable key).
	Invalid bool
	// Err is the cause.
	Err error
}

func (e *FetchError) Error() string {
	switch {
	case e.StatusCode != 0 && !e.Invalid:
		return fmt.Sprintf("authfallback: fetch %s: status %d", e.URL, e.StatusCode)
	default:
		return fmt.Sprintf("authfallback: fetch %s: %v", e.URL, e.Err)
	}
}

func (e *FetchError) Unwrap() error { return e.Err }

// Refresh fetches the key set now, trying the JWKS URLs in order, and
// returns the error if none gave a usable set. Refreshes are single-flight:
// a call made while one runs waits for it and then fetches again. The
// background refresh keeps running on its own; Refresh is for operators and
// tests. A successful refresh that follows degraded acceptances runs the
// reconciliation (see Config.OnReconcile) before Refresh returns.
func (v *Verifier) Refresh(ctx context.Context) error {
	if len(v.cfg.JWKSURLs) == 0 && !v.cfg.Discovery {
		return errors.New("authfallback: no JWKS URL configured")
	}
	_, err := v.refresh(ctx)
	// The loop takes its next attempt from the schedule this refresh set
	// (backoff after a failure, RefreshInterval after a success).
	select {
	case v.resched <- struct{}{}:
	default:
	}
	return err
}

// loop refreshes the key set until Close. notify, if not nil, reports the
// outcome of the first fetch made by New: hooks are never called from
// inside New, so a hook whose target is assigned after New returns is safe.
func (v *Verifier) loop(first time.Duration, notify func()) {
	defer close(v.loopDone)
	select {
	case <-v.started:
	case <-v.closing:
		return
	}
	if notify != nil {
		notify()
	}
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-v.closing:
			return
		case <-t.C:
		case <-v.kick:
			t.Stop()
		case <-v.resched:
			// A manual Refresh ran: follow its schedule.
			t.Stop()
			t.Reset(time.Until(time.Unix(0, v.nextAttempt.Load())))
			continue
		}
		next, _ := v.refresh(v.ctx)
		select {
		case <-v.closing:
			return
		default:
		}
		t.Reset(next)
	}
}

// refresh fetches the key set once (all URLs in order), applies the result
// and returns the delay until the next refresh and the error, if any. Audit
// events and hooks run after the single-flight lock is released.
func (v *Verifier) refresh(ctx context.Context) (time.Duration, error) {
	next, notify, err := v.refreshLocked(ctx, true)
	notify()
	return next, err
}

// reconcile is false for the first fetch of New: no token can have been
// accepted degraded before it, and its report runs later, when tokens
// accepted since must wait for the next success.
func (v *Verifier) refreshLocked(ctx context.Context, reconcile bool) (next time.Duration, notify func(), err error) {
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()

	var errs []error
	var ks *keySet
	urls, derr := v.fetchURLs(ctx)
	if derr != nil {
		errs = append(errs, derr)
	}
	for _, u := range urls {
		var err error
		ks, err = v.fetch(ctx, u)
		if err == nil {
			break
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if ks == nil && ctx.Err() != nil {
		// Cancelled (Close, or the caller of Refresh gave up): not an
		// outage, nothing to record.
		return 0, func() {}, context.Cause(ctx)
	}
	now := time.Now()
	var report func()
	if ks != nil {
		next = v.refreshInterval()
		report = v.applySuccess(ctx, ks, now, reconcile)
	} else {
		err = errors.Join(errs...)
		if v.cfg.State != nil {
			// Another replica may reach the IdP: take the newer set it
			// shared (fallback mode stays: this replica cannot confirm).
			if shared := v.loadSharedKeys(ctx, v.keys.Load(), now); shared != nil {
				v.installShared(shared, now)
			}
		}
		next, report = v.applyFailure(ctx, err, errs, now)
	}
	v.nextAttempt.Store(now.Add(next).UnixNano())
	notify = func() {
		for _, e := range errs {
			var fe *FetchError
			if errors.As(e, &fe) && fe.Invalid {
				v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: key set refused",
					slog.String("url", fe.URL), slog.String("error", e.Error()))
			}
		}
		report()
	}
	return next, notify, err
}

func (v *Verifier) refreshInterval() time.Duration { return v.cfg.refreshInterval() }

// fetch GETs one JWKS URL and parses it.
func (v *Verifier) fetch(ctx context.Context, u string) (*keySet, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.fetchTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, &FetchError{URL: u, Err: err}
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, &FetchError{URL: u, Err: err}
	}
	defer httpx.DrainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Err: fmt.Errorf("status %d", resp.StatusCode)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSSize+1))
	if err != nil {
		return nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Err: err}
	}
	ks, err := parseKeySet(b, v.algs)
	if err != nil {
		return nil, &FetchError{URL: u, StatusCode: resp.StatusCode, Invalid: true, Err: err}
	}
	ks.source = u
	return ks, nil
}

// applySuccess installs ks and returns what to report once unlocked.
func (v *Verifier) applySuccess(ctx context.Context, ks *keySet, now time.Time, reconcile bool) (notify func()) {
	ks.fetchedAt = now
	changed := v.checkPrimaryKeys(ks)
	// Keep the identity of unchanged keys so verified-token cache entries
	// stay valid across refreshes; drop entries of keys that left or changed.
	if old := v.keys.Load(); old != nil {
		for kid, k := range ks.byKID {
			if o := old.byKID[kid]; o != nil && o.fp == k.fp && o.reason == k.reason {
				ks.byKID[kid] = o
			}
		}
	}
	v.keys.Store(ks)
	v.cache.retain(func(kid string) *verifyKey { return v.lookup(ks, kid, now) })
	var writeErr error
	if v.cfg.CacheFile != "" {
		writeErr = writeCacheFile(v.cfg.CacheFile, ks, v.cacheBinding())
	}

	v.mu.Lock()
	v.failures = 0
	v.lastErr = nil
	v.lastAttempt = now
	fb := v.fb.Swap(nil)
	v.mu.Unlock()

	return func() {
		for _, kid := range changed {
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: alternate JWKS URL changed the key under a kid the primary served",
				slog.String("kid", kid), slog.String("url", ks.source), slog.String("primary", v.cfg.JWKSURLs[0]),
				slog.String("reason", ReasonJWKSKeyChanged))
		}
		if writeErr != nil {
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: cache file not written", slog.String("error", writeErr.Error()))
		}
		if v.cfg.State != nil {
			v.saveSharedKeys(ctx, ks)
		}
		if fb != nil {
			ev := FallbackEvent{Reason: fb.reason, Since: fb.since, Duration: now.Sub(fb.since)}
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: fallback mode exit",
				slog.String("reason", fb.reason), slog.Time("since", fb.since), slog.Duration("duration", ev.Duration),
				slog.Int("keys", len(ks.byKID)))
			if v.cfg.OnFallbackExit != nil {
				v.cfg.OnFallbackExit(ev)
			}
		}
		// The IdP answers: re-check what was accepted degraded.
		if reconcile {
			v.reconcile(ctx, ks)
		}
	}
}

// applyFailure records a failed refresh and returns the retry delay and what
// to report once unlocked.
func (v *Verifier) applyFailure(ctx context.Context, err error, errs []error, now time.Time) (time.Duration, func()) {
	reason := ReasonJWKSInvalid
	for _, e := range errs {
		var fe *FetchError
		if !errors.As(e, &fe) || !fe.Invalid {
			reason = ReasonJWKSUnreachable
		}
	}
	var age time.Duration
	if ks := v.keys.Load(); ks != nil {
		age = now.Sub(ks.fetchedAt)
	}

	v.mu.Lock()
	v.failures++
	attempt := v.failures
	v.lastErr = err
	v.lastAttempt = now
	var entered *fallbackState
	if v.fb.Load() == nil {
		entered = &fallbackState{since: now, reason: reason}
		v.fb.Store(entered)
	} else if cur := v.fb.Load(); cur.reason != reason {
		v.fb.Store(&fallbackState{since: cur.since, reason: reason})
	}
	v.mu.Unlock()

	next := backoff(attempt, v.refreshInterval())
	return next, func() {
		if entered != nil {
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: fallback mode enter",
				slog.String("reason", reason), slog.Duration("key_age", age), slog.String("error", err.Error()))
			if v.cfg.OnFallbackEnter != nil {
				v.cfg.OnFallbackEnter(FallbackEvent{Reason: reason, Since: now, KeyAge: age, Err: err})
			}
		}
		if v.cfg.OnRefreshError != nil {
			v.cfg.OnRefreshError(RefreshErrorEvent{Err: err, Attempt: attempt, Retry: next, KeyAge: age})
		}
	}
}

// backoff returns the delay before retry number attempt (from 1): base
// doubling, capped at max, with equal jitter (half fixed, half random).
func backoff(attempt int, max time.Duration) time.Duration {
	d := refreshBackoffBase
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + rand.N(half+1)
}

// kickUnknownKID asks the refresh loop for a refresh because a token named
// an unknown kid: at most once per UnknownKIDRefreshInterval, never waiting.
func (v *Verifier) kickUnknownKID() {
	if len(v.cfg.JWKSURLs) == 0 && !v.cfg.Discovery {
		return
	}
	now := time.Now().UnixNano()
	last := v.lastKick.Load()
	if last != 0 && now-last < int64(v.cfg.unknownKIDInterval()) {
		return
	}
	if !v.lastKick.CompareAndSwap(last, now) {
		return
	}
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// ReasonJWKSKeyChanged is the Result.Reason of a token verified by a key
// that an alternate JWKS URL serves under a kid for which the primary URL
// served other key material: the alternate cannot silently replace a key
// of the primary. Such tokens are degraded (narrowed by the Policy, never
// exchanged for offline tokens) until the primary confirms the key, and
// reconciliation reports them (FindingKeyReplaced) once it serves another.
const ReasonJWKSKeyChanged = "jwks-key-changed"

// checkPrimaryKeys remembers the keys of a set fetched from the primary
// JWKS URL, and marks (reason ReasonJWKSKeyChanged) the keys of a set from
// an alternate URL that differ from the primary's under the same kid,
// returning their kids. v.refreshMu is held (or New is running).
func (v *Verifier) checkPrimaryKeys(ks *keySet) (changed []string) {
	if len(v.cfg.JWKSURLs) == 0 {
		return nil
	}
	if ks.source == v.cfg.JWKSURLs[0] {
		m := make(map[string]string, len(ks.byKID))
		for kid, k := range ks.byKID {
			m[kid] = k.fp
		}
		v.primaryKeys = m
		return nil
	}
	for kid, k := range ks.byKID {
		if fp, ok := v.primaryKeys[kid]; ok && fp != k.fp {
			c := *k
			c.reason = ReasonJWKSKeyChanged
			ks.byKID[kid] = &c
			changed = append(changed, kid)
		}
	}
	return changed
}
