package authfallback

// How the shared outage state (Config.State) is kept: writes are queued
// and flushed by one goroutine every StateFlushInterval (and by Close), so
// no verification waits for the store. Reads happen in New (the key set),
// after a failed refresh (a newer key set another replica fetched), for an
// expired token in fallback mode that this Verifier never saw (its grace
// record; bounded by stateLookupTimeout, misses remembered), before
// reconciliation, and in fallback mode every StateFlushInterval (the key
// set record: has another replica reached the IdP again?).

import (
	"context"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// DefaultStateFlushInterval is Config.StateFlushInterval when zero.
	DefaultStateFlushInterval = time.Second
	// stateLookupTimeout bounds the lookup of a grace record made on the
	// request path.
	stateLookupTimeout = time.Second
	// maxPendingSeen bounds the queue of seen-valid records not yet
	// written; past it, records are dropped (the token still verifies, it
	// just gets no grace on other replicas).
	maxPendingSeen = 10000
	// takePage is how many degraded records one TakeDegraded returns.
	takePage = 1000
	// maxTaken bounds the records one reconciliation takes.
	maxTaken = 100 * takePage
	// stateErrorLogInterval is how often store errors are logged.
	stateErrorLogInterval = time.Minute
)

// stateSync is the write queue to Config.State.
type stateSync struct {
	mu      sync.Mutex
	seen    []SeenToken
	dropped int
	done    chan struct{}
	lastLog atomic.Int64
	// kicked is the FetchedAt of the last shared key set record that
	// triggered a refresh (watchRecovery; flushLoop's goroutine only).
	kicked time.Time
}

func (c *Config) stateFlushInterval() time.Duration {
	if c.StateFlushInterval > 0 {
		return c.StateFlushInterval
	}
	return DefaultStateFlushInterval
}

// recordTTL is how long a degraded record is kept for reconciliation.
func (v *Verifier) recordTTL() time.Duration { return v.staleAfter }

// queueSeen queues the seen-valid record of res for the shared state.
func (v *Verifier) queueSeen(res *Result, now time.Time) {
	st := v.st
	if st == nil || v.grace.grace <= 0 {
		return
	}
	rec := SeenToken{TokenHash: res.TokenHash, Issuer: res.Issuer, SeenAt: now, ExpiresAt: res.ExpiresAt, Expires: res.ExpiresAt.Add(v.grace.grace)}
	st.mu.Lock()
	if len(st.seen) < maxPendingSeen {
		st.seen = append(st.seen, rec)
	} else {
		st.dropped++
	}
	st.mu.Unlock()
}

// flushLoop writes the queues every StateFlushInterval until Close, then
// once more.
func (v *Verifier) flushLoop() {
	defer close(v.st.done)
	t := time.NewTicker(v.cfg.stateFlushInterval())
	defer t.Stop()
	for {
		select {
		case <-v.closing:
			ctx, cancel := context.WithTimeout(context.Background(), v.cfg.fetchTimeout())
			v.flushState(ctx)
			cancel()
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(v.ctx, v.cfg.fetchTimeout())
			v.flushState(ctx)
			v.watchRecovery(ctx)
			cancel()
		}
	}
}

// watchRecovery, in fallback mode, looks at the key set record of the
// shared state: one fetched after this Verifier's fallback mode began
// means another replica reached the IdP again, so the refresh runs now
// instead of after its backoff (which grows to RefreshInterval). Without
// it, a fleet leaves fallback mode replica by replica over up to one
// RefreshInterval after the IdP is back, and until then a replica honours
// grace windows and offline tokens that the others refuse, and learns the
// revocations published during the outage last (its Revocations are
// refreshed when it reconciles). One read of the store per
// StateFlushInterval while in fallback mode; each record triggers one
// refresh at most, so a replica that still cannot reach the IdP keeps to
// its backoff.
func (v *Verifier) watchRecovery(ctx context.Context) {
	fb := v.fb.Load()
	if fb == nil || (len(v.cfg.JWKSURLs) == 0 && !v.cfg.Discovery) {
		return
	}
	rec, ok, err := v.cfg.State.LoadKeys(ctx, v.cfg.Issuer)
	if err != nil {
		v.stateError(ctx, "key set record not read", err)
		return
	}
	if !ok || !rec.FetchedAt.After(fb.since) || !rec.FetchedAt.After(v.st.kicked) {
		return
	}
	v.st.kicked = rec.FetchedAt
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// flushState writes what is queued; what fails is queued again.
func (v *Verifier) flushState(ctx context.Context) {
	st := v.st
	st.mu.Lock()
	seen, dropped := st.seen, st.dropped
	st.seen, st.dropped = nil, 0
	st.mu.Unlock()
	if len(seen) > 0 {
		if err := v.cfg.State.AddSeen(ctx, seen); err != nil {
			v.stateError(ctx, "seen-valid records not written", err)
			st.mu.Lock()
			if n := maxPendingSeen - len(st.seen); n > 0 {
				st.seen = append(st.seen, seen[:min(n, len(seen))]...)
			}
			st.mu.Unlock()
		}
	}
	if dropped > 0 {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: state: seen-valid records dropped (queue full)", slog.Int("dropped", dropped))
	}
	if batch := v.records.pendingBatch(); len(batch) > 0 {
		if err := v.cfg.State.AddDegraded(ctx, batch); err != nil {
			v.stateError(ctx, "degraded records not written", err)
			v.records.unflush(batch)
		}
	}
}

// stateError logs a store error, at most once per stateErrorLogInterval.
func (v *Verifier) stateError(ctx context.Context, msg string, err error) {
	now := time.Now().UnixNano()
	last := v.st.lastLog.Load()
	if last != 0 && now-last < int64(stateErrorLogInterval) {
		return
	}
	if v.st.lastLog.CompareAndSwap(last, now) {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: state: "+msg, slog.String("error", err.Error()))
	}
}

// sharedGrace looks up the grace record of an expired token in the shared
// state and, if another replica saw it valid before fallback mode began,
// verifies the token again as of that time (signature with a key trusted
// now, every claim) and remembers it locally. It reports whether it did.
func (v *Verifier) sharedGrace(ctx context.Context, h [32]byte, raw string, ks *keySet, fb *fallbackState, now time.Time) bool {
	if v.grace.missed(h, now) {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, stateLookupTimeout)
	rec, ok, err := v.cfg.State.Seen(lctx, hex.EncodeToString(h[:]))
	cancel()
	if err != nil {
		if v.st != nil {
			v.stateError(ctx, "grace record lookup failed", err)
		}
		return false
	}
	if !ok {
		v.grace.noteMiss(h, now.Add(2*v.cfg.stateFlushInterval()))
		return false
	}
	if rec.Issuer != v.cfg.Issuer || !rec.SeenAt.Before(v.outageSince(fb, ks)) || rec.SeenAt.After(now) {
		return false
	}
	seenAt := rec.SeenAt
	p := jwt.NewParser(append(v.parserOpts[:len(v.parserOpts):len(v.parserOpts)], jwt.WithTimeFunc(func() time.Time { return seenAt }))...)
	claims, used, err := v.parseToken(raw, ks, now, p)
	if err != nil || used.issuer != "" {
		return false
	}
	res := newResult(claims, used.kid, h)
	res.keyFP = used.fp
	v.grace.remember(h, res, used, seenAt, now)
	return true
}

// loadSharedKeys returns the key set of the shared state if it is valid
// for this Verifier (the CacheFile's rules) and newer than cur, else nil.
func (v *Verifier) loadSharedKeys(ctx context.Context, cur *keySet, now time.Time) *keySet {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.fetchTimeout())
	defer cancel()
	rec, ok, err := v.cfg.State.LoadKeys(ctx, v.cfg.Issuer)
	if err != nil {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: state: key set not loaded", slog.String("error", err.Error()))
		return nil
	}
	if !ok {
		return nil
	}
	ks, err := parseCacheFile(rec.Doc, v.algs, v.cacheBinding(), now)
	if err != nil {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: state: shared key set refused", slog.String("error", err.Error()))
		return nil
	}
	if cur != nil && !ks.fetchedAt.After(cur.fetchedAt) {
		return nil
	}
	v.auditChangedKeys(ctx, cur, ks, "shared state")
	return ks
}

// saveSharedKeys writes ks to the shared state.
func (v *Verifier) saveSharedKeys(ctx context.Context, ks *keySet) {
	doc, err := encodeCacheFile(ks, v.cacheBinding())
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, v.cfg.fetchTimeout())
		_, err = v.cfg.State.SaveKeys(sctx, KeySetRecord{Issuer: v.cfg.Issuer, FetchedAt: ks.fetchedAt, Doc: doc})
		cancel()
	}
	if err != nil {
		v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: state: key set not written", slog.String("error", err.Error()))
	}
}

// auditChangedKeys writes an audit event for every kid of cur that next
// maps to other key material.
func (v *Verifier) auditChangedKeys(ctx context.Context, cur, next *keySet, source string) {
	if cur == nil {
		return
	}
	for kid, k := range next.byKID {
		if o := cur.byKID[kid]; o != nil && o.fp != k.fp {
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: key changed under a known kid",
				slog.String("kid", kid), slog.String("source", source), slog.String("url", next.source))
		}
	}
}

// installShared installs a newer key set read from the shared state
// during fallback mode, keeping the identity of unchanged keys.
func (v *Verifier) installShared(ks *keySet, now time.Time) {
	v.checkPrimaryKeys(ks)
	if old := v.keys.Load(); old != nil {
		for kid, k := range ks.byKID {
			if o := old.byKID[kid]; o != nil && o.fp == k.fp && o.reason == k.reason {
				ks.byKID[kid] = o
			}
		}
	}
	v.keys.Store(ks)
	v.cache.retain(func(kid string) *verifyKey { return v.lookup(ks, kid, now) })
}

// takeDegraded returns the degraded acceptances to reconcile: with
// Config.State, those of every replica (this one's written first), each
// taken by one replica only; otherwise (or if the store fails) this
// Verifier's own.
func (v *Verifier) takeDegraded(ctx context.Context) ([]DegradedAcceptance, int) {
	if v.cfg.State == nil {
		return v.records.take()
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.fetchTimeout())
	defer cancel()
	if batch := v.records.pendingBatch(); len(batch) > 0 {
		if err := v.cfg.State.AddDegraded(ctx, batch); err != nil {
			v.records.unflush(batch)
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile: shared state unavailable, reconciling this replica's records only", slog.String("error", err.Error()))
			return v.records.take()
		}
	}
	var out []DegradedAcceptance
	for len(out) < maxTaken {
		page, err := v.cfg.State.TakeDegraded(ctx, v.cfg.Issuer, takePage)
		if err != nil {
			v.audit.LogAttrs(ctx, slog.LevelWarn, "authfallback: reconcile: taking shared records failed", slog.String("error", err.Error()))
			if len(out) == 0 {
				return v.records.take()
			}
			break
		}
		out = append(out, page...)
		if len(page) < takePage {
			break
		}
	}
	_, missed := v.records.take()
	return out, missed
}
