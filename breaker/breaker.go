package breaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// State is the state of one circuit breaker.
type State int

const (
	// Closed lets calls through and counts their outcomes.
	Closed State = iota
	// Open refuses calls until its delay has passed.
	Open
	// HalfOpen lets a few trial calls through to decide whether to close.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "unknown"
}

func fromFailsafe(s circuitbreaker.State) State {
	switch s {
	case circuitbreaker.OpenState:
		return Open
	case circuitbreaker.HalfOpenState:
		return HalfOpen
	}
	return Closed
}

// StateChange is passed to Config.OnStateChange.
type StateChange struct {
	// Key is the breaker's key: by default a host (Transport) or a route
	// (Handler).
	Key string
	// From and To are the states before and after the change.
	From, To State
}

// Status describes one key's breaker, for status pages.
type Status struct {
	Key   string
	State State
	// RetryAfter is the time left until an open breaker lets a trial call
	// through; zero unless State is Open.
	RetryAfter time.Duration
	// Requests and Failures count the calls recorded in the current state
	// (for an open breaker: in the closed state before it opened).
	Requests, Failures uint
}

// Config configures a Breaker. Every zero field means the documented default.
type Config struct {
	// FailureThreshold is the number of consecutive failures that opens a
	// closed breaker. If zero, 5.
	FailureThreshold int
	// FailureRate opens a closed breaker when the share of failures over
	// Window reaches it, once at least MinRequests calls were recorded in
	// the Window. It must be in (0, 1]. If zero, 0.2.
	FailureRate float64
	// Window is the sliding period the failure rate is computed over, in 10
	// buckets. If zero, 60 s.
	Window time.Duration
	// MinRequests is the number of calls in Window below which the failure
	// rate is not considered. If zero, 20.
	MinRequests int
	// Delay is how long an open breaker refuses calls before it half-opens.
	// If zero, 30 s.
	Delay time.Duration
	// Jitter varies each Delay at random by up to this fraction, in either
	// direction, so breakers that opened together do not probe together.
	// It must be in [0, 1). If zero, 0.2.
	Jitter float64
	// DisableJitter makes every Delay exact.
	DisableJitter bool
	// SuccessThreshold is the number of trial calls let through by a
	// half-open breaker; it closes when all of them succeed and opens again
	// on the first failure. If zero, 3.
	SuccessThreshold int
	// Timeout bounds each call; a call that outlasts it counts as a failure.
	// On the client side the request's context is cancelled after Timeout:
	// the timer runs until the response body is closed, so a body read that
	// outlasts it is cut off (but the call, already answered, is not counted
	// again). On the server side the handler's request context carries the
	// deadline and a handler that returns after it counts as a failure, so
	// long-lived streams (server-sent events) need a negative Timeout or no
	// breaker. Requests with an Upgrade header (WebSocket) are timed
	// until the handler hijacks the connection; their context has no
	// deadline, only a cancellation at Timeout. On the client side they
	// are not timed.
	// If zero, 2 s. If negative, calls are not timed.
	Timeout time.Duration
	// MaxKeys bounds the number of breakers held. When a new key arrives and
	// the registry is full, the least recently used closed breakers are
	// evicted; open and half-open breakers are never evicted. If none can be
	// evicted, the call proceeds without a breaker (unprotected and not
	// counted) and Logger, if set, says so. If zero, 10,000.
	MaxKeys int
	// Key maps a request to its breaker's key. If nil, Transport uses the
	// request URL's host (host:port, lower-cased) and Handler uses
	// r.Pattern, the ServeMux pattern that matched, or "*" when it is empty.
	// Keys are compared exactly; a Key function must return few distinct
	// values (MaxKeys bounds them but eviction costs a scan).
	Key func(*http.Request) string
	// IsFailure classifies a finished call: status is the response status
	// (0 when no response arrived) and err a transport error or one
	// matching ErrTimeout (also when the caller's own deadline passed while
	// the upstream worked: a hanging upstream must open the breaker even
	// when callers time out first). A call cancelled by its caller is not
	// classified and not counted, except a
	// half-open trial call: failsafe-go cannot take back its permit unused,
	// so an abandoned trial counts as a failed one and the breaker opens
	// again. A handler panic always counts as a failure. If nil, errors
	// and 5xx statuses other than 501 are failures; 4xx statuses are not.
	IsFailure func(status int, err error) bool
	// Cached, if set, is asked for a response to serve while the breaker is
	// open, e.g. the last good response from a stale cache. It is used only
	// for safe methods (GET, HEAD, OPTIONS, TRACE), and must only return a
	// response this requester may see (a cache shared between callers must
	// not hold private responses). Returning false falls through to
	// Fallback. The response is served with a Holdfast-Degraded header added
	// when absent and its Set-Cookie headers removed; on the server side it
	// is copied to the ResponseWriter (without hop-by-hop headers) and its
	// body closed.
	Cached func(*http.Request) (*http.Response, bool)
	// Fallback, if set, is served to safe methods while the breaker is open
	// and Cached has nothing. If nil, the client side gets an *OpenError and
	// the server side answers 503 with Retry-After and a problem+json body.
	Fallback *Document
	// OnStateChange, if set, is called after a breaker changes state. It is
	// called outside any lock, may be called concurrently, and must not
	// block. Events of one key may arrive out of order when transitions race.
	OnStateChange func(StateChange)
	// Logger receives state changes (Warn when a breaker opens, Info
	// otherwise). If nil, nothing is logged.
	Logger *slog.Logger
}

// Document is a small fixed response served while a breaker is open.
type Document struct {
	// Status is the response status. If zero, 200.
	Status int
	// ContentType is the Content-Type header. If empty, none is set.
	ContentType string
	// Body is the response body.
	Body []byte
}

// Breaker holds one circuit breaker per key (per host on the client side,
// per route on the server side), created on first use. It is safe for
// concurrent use. Use one Breaker per side: keys of Transport and Handler
// share one registry.
type Breaker struct {
	cfg Config

	start       time.Time // the origin of window bucket indexes
	bucketNanos int64     // Window / windowBuckets
	clk         clock     // bucket index for successes

	// read is an immutable copy of keys that calls look up without a lock
	// (a plain map: fewer dependent loads than sync.Map, which matters when
	// calls spread over thousands of hosts). It is refreshed after as many
	// lookups missed it as keys holds, and at once after an eviction.
	read  atomic.Pointer[map[string]*entry]
	epoch atomic.Uint64

	mu     sync.Mutex
	keys   map[string]*entry // every entry, guarded by mu
	misses int               // lookups of keys missing from read, guarded by mu
}

type entry struct {
	key  string
	cb   circuitbreaker.CircuitBreaker[any]
	win  window        // failure-rate window, live while closed
	used atomic.Uint64 // epoch of the last use
	// fsMetrics is set while Snapshot reports failsafe-go's counts (a
	// half-open breaker, or one that opened again from half-open) rather
	// than the window's.
	fsMetrics atomic.Bool
}

const (
	defaultFailureThreshold = 5
	defaultFailureRate      = 0.2
	defaultWindow           = 60 * time.Second
	defaultMinRequests      = 20
	defaultDelay            = 30 * time.Second
	defaultJitter           = 0.2
	defaultSuccessThreshold = 3
	defaultTimeout          = 2 * time.Second
	defaultMaxKeys          = 10000

	// degradedReason is the Holdfast-Degraded value of fallback responses.
	degradedReason = "circuit-open"
)

// New returns a Breaker for cfg, filling its defaults. It panics if a field
// is out of range.
func New(cfg Config) *Breaker {
	if cfg.FailureThreshold < 0 || cfg.MinRequests < 0 || cfg.SuccessThreshold < 0 || cfg.MaxKeys < 0 {
		panic("breaker: negative FailureThreshold, MinRequests, SuccessThreshold or MaxKeys")
	}
	if cfg.FailureRate < 0 || cfg.FailureRate > 1 {
		panic(fmt.Sprintf("breaker: FailureRate %v outside (0, 1]", cfg.FailureRate))
	}
	if cfg.Jitter < 0 || cfg.Jitter >= 1 {
		panic(fmt.Sprintf("breaker: Jitter %v outside [0, 1)", cfg.Jitter))
	}
	if cfg.Window < 0 || cfg.Delay < 0 {
		panic("breaker: negative Window or Delay")
	}
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = defaultFailureThreshold
	}
	if cfg.FailureRate == 0 {
		cfg.FailureRate = defaultFailureRate
	}
	if cfg.Window == 0 {
		cfg.Window = defaultWindow
	}
	if cfg.MinRequests == 0 {
		cfg.MinRequests = defaultMinRequests
	}
	if cfg.Delay == 0 {
		cfg.Delay = defaultDelay
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = defaultJitter
	}
	if cfg.DisableJitter {
		cfg.Jitter = 0
	}
	if cfg.SuccessThreshold == 0 {
		cfg.SuccessThreshold = defaultSuccessThreshold
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = defaultMaxKeys
	}
	if cfg.IsFailure == nil {
		cfg.IsFailure = isFailure
	}
	if cfg.Fallback != nil {
		d := *cfg.Fallback
		d.Body = slices.Clone(d.Body)
		cfg.Fallback = &d
	}
	return &Breaker{cfg: cfg, start: time.Now(), bucketNanos: max(1, int64(cfg.Window/windowBuckets))}
}

// isFailure is the default classification.
func isFailure(status int, err error) bool {
	if err != nil {
		return true
	}
	return status >= 500 && status != http.StatusNotImplemented
}

// State returns the state of key's breaker; Closed for a key not seen yet.
// An open breaker whose delay has passed reports Open until the next call
// half-opens it.
func (b *Breaker) State(key string) State {
	if e := b.lookup(key); e != nil {
		return fromFailsafe(e.cb.State())
	}
	return Closed
}

// lookup returns key's entry, or nil when there is none.
func (b *Breaker) lookup(key string) *entry {
	if m := b.read.Load(); m != nil {
		if e, ok := (*m)[key]; ok {
			return e
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.locked(key)
}

// locked returns key's entry from keys, or nil, and refreshes read once it
// has been missed as many times as keys has entries. b.mu must be held.
func (b *Breaker) locked(key string) *entry {
	e, ok := b.keys[key]
	if ok {
		if b.misses++; b.misses >= len(b.keys) {
			b.refresh()
		}
	}
	return e
}

// refresh replaces read with a copy of keys. b.mu must be held.
func (b *Breaker) refresh() {
	m := maps.Clone(b.keys)
	b.read.Store(&m)
	b.misses = 0
}

// Snapshot returns the status of every breaker held, sorted by key.
func (b *Breaker) Snapshot() []Status {
	b.mu.Lock()
	entries := slices.Collect(maps.Values(b.keys))
	b.mu.Unlock()
	out := make([]Status, 0, len(entries))
	idx := b.now()
	for _, e := range entries {
		st := Status{
			Key:        e.key,
			State:      fromFailsafe(e.cb.State()),
			RetryAfter: e.cb.RemainingDelay(),
		}
		if e.fsMetrics.Load() {
			m := e.cb.Metrics()
			st.Requests, st.Failures = m.Executions(), m.Failures()
		} else {
			st.Requests, st.Failures = e.win.sums(idx)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y Status) int { return cmp.Compare(x.Key, y.Key) })
	return out
}

// get returns key's entry, creating it on first use. It returns nil when
// the registry is full of breakers that cannot be evicted.
func (b *Breaker) get(key string) *entry {
	var e *entry
	if m := b.read.Load(); m != nil {
		e = (*m)[key]
	}
	if e == nil {
		if e = b.insert(key); e == nil {
			if b.cfg.Logger != nil {
				// Logged outside b.mu: a slog handler is user code.
				b.cfg.Logger.Warn("breaker: registry full of open breakers; call not protected",
					slog.String("key", key), slog.Int("max_keys", b.cfg.MaxKeys))
			}
			return nil
		}
	}
	if ep := b.epoch.Load(); e.used.Load() != ep {
		e.used.Store(ep)
	}
	return e
}

// insert returns key's entry, creating it, or nil when the registry is full
// of breakers that cannot be evicted.
func (b *Breaker) insert(key string) *entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.locked(key); e != nil {
		return e
	}
	if len(b.keys) >= b.cfg.MaxKeys && !b.evict() {
		return nil
	}
	e := &entry{key: key}
	e.win.active.Store(true)
	e.used.Store(b.epoch.Add(1))
	e.cb = b.build(e)
	if b.keys == nil {
		b.keys = make(map[string]*entry)
	}
	b.keys[key] = e
	return e
}

// evict removes the least recently used closed breakers, about an eighth
// of MaxKeys so that the scan is amortised. It reports whether any was
// removed. b.mu must be held; no breaker transitions here, so no listener
// runs under the lock.
func (b *Breaker) evict() bool {
	var closed []*entry
	for _, e := range b.keys {
		if e.cb.State() == circuitbreaker.ClosedState {
			closed = append(closed, e)
		}
	}
	if len(closed) == 0 {
		return false
	}
	slices.SortFunc(closed, func(x, y *entry) int { return cmp.Compare(x.used.Load(), y.used.Load()) })
	n := max(1, b.cfg.MaxKeys/8)
	for _, e := range closed[:min(n, len(closed))] {
		delete(b.keys, e.key)
	}
	b.refresh() // no call may find an evicted entry in read
	return true
}

func (b *Breaker) build(e *entry) circuitbreaker.CircuitBreaker[any] {
	c := &b.cfg
	// failsafe-go's count-based threshold of FailureThreshold failures out
	// of the last FailureThreshold calls is the consecutive-failure rule;
	// the failure rate over Window is counted in e.win (see window).
	bld := circuitbreaker.NewBuilder[any]().
		WithFailureThreshold(uint(c.FailureThreshold)).
		WithDelay(c.Delay).
		WithSuccessThreshold(uint(c.SuccessThreshold)).
		OnStateChanged(func(ev circuitbreaker.StateChangedEvent) {
			// failsafe-go calls listeners after releasing its lock.
			from, to := fromFailsafe(ev.OldState), fromFailsafe(ev.NewState)
			if to == Closed {
				e.win.reset()
			} else {
				e.win.active.Store(false)
			}
			e.fsMetrics.Store(to == HalfOpen || (to == Open && from == HalfOpen))
			b.stateChanged(e.key, from, to)
		})
	if c.Jitter > 0 {
		bld = bld.WithJitterFactor(c.Jitter)
	}
	return bld.Build()
}

func (b *Breaker) stateChanged(key string, from, to State) {
	if l := b.cfg.Logger; l != nil {
		lvl := slog.LevelInfo
		if to == Open {
			lvl = slog.LevelWarn
		}
		l.Log(context.Background(), lvl, "breaker: state change",
			slog.String("key", key), slog.String("from", from.String()), slog.String("to", to.String()))
	}
	if f := b.cfg.OnStateChange; f != nil {
		f(StateChange{Key: key, From: from, To: to})
	}
}

// outcome of a call.
type outcome int

const (
	success outcome = iota
	failure
	ignored // cancelled by the caller
)

// record feeds an outcome to e's breaker. The permit taken by
// TryAcquirePermit is released by every path.
func (b *Breaker) record(e *entry, o outcome) {
	switch o {
	case success, failure:
		// The window counts first: the failsafe-go call may open the
		// breaker and make the window stop counting.
		trip := b.windowRecord(e, o == failure)
		if o == failure {
			e.cb.RecordFailure()
		} else {
			e.cb.RecordSuccess()
		}
		if trip && e.cb.IsClosed() {
			e.cb.Open()
		}
	case ignored:
		// failsafe-go has no way to hand back a half-open permit unused;
		// a trial call the caller abandoned proves nothing, so it counts as
		// a failed trial rather than leaving the breaker without permits.
		if e.cb.IsHalfOpen() {
			e.cb.RecordFailure()
		}
	}
}

// endedByCaller classifies a call whose caller's context ended first. A
// cancellation proves nothing about the upstream and is ignored; a caller
// deadline that passed while the upstream worked is the upstream being too
// slow for its callers, and is classified like a timeout. Without this, a
// client whose per-attempt timeout (retry's AttemptTimeout, http.Client's
// Timeout) is shorter than Config.Timeout would never open the breaker on
// a hanging upstream.
func (b *Breaker) endedByCaller(parent context.Context, status int, err error) outcome {
	if !errors.Is(parent.Err(), context.DeadlineExceeded) {
		return ignored
	}
	if err == nil {
		err = context.DeadlineExceeded
	}
	return b.classify(status, fmt.Errorf("%w: %w", ErrTimeout, err))
}

func (b *Breaker) classify(status int, err error) outcome {
	if b.cfg.IsFailure(status, err) {
		return failure
	}
	return success
}

// retryAfter is the time left until e lets a trial call through.
func (e *entry) retryAfter() time.Duration { return e.cb.RemainingDelay() }
