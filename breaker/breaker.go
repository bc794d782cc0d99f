package breaker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
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

// MarshalText encodes s as its String form ("closed", "open", "half-open").
func (s State) MarshalText() ([]byte, error) {
	if s < Closed || s > HalfOpen {
		return nil, fmt.Errorf("breaker: invalid state %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses "closed", "open" or "half-open".
func (s *State) UnmarshalText(b []byte) error {
	switch string(b) {
	case "closed":
		*s = Closed
	case "open":
		*s = Open
	case "half-open":
		*s = HalfOpen
	default:
		return fmt.Errorf("breaker: unknown state %q", string(b[:min(len(b), 32)]))
	}
	return nil
}

// StateChange is passed to Config.OnStateChange.
type StateChange struct {
	// Key is the breaker's key: by default a host (Transport) or a route
	// (Handler).
	Key string
	// From and To are the states before and after the change.
	From, To State
	// Seq orders the changes of one Breaker: it grows by one with every
	// change, of any key. Hooks run concurrently, so a hook may see a later
	// change before an earlier one; one that keeps the latest state of a
	// key must ignore a change whose Seq is below the last it applied.
	Seq uint64
	// At is when the change was seen.
	At time.Time
}

// Status describes one key's breaker, for status pages. It encodes as JSON
// with the state as text and durations in seconds.
type Status struct {
	Key   string `json:"key"`
	State State  `json:"state"`
	// RetryAfter is the time left until an open breaker lets a trial call
	// through; zero unless State is Open. JSON: retry_after_seconds.
	RetryAfter time.Duration `json:"-"`
	// Requests and Failures count the calls recorded in the current state
	// (for an open breaker: in the closed state before it opened); Slow
	// counts the slow calls among them ([Config.SlowCallDuration]).
	Requests uint `json:"requests"`
	Failures uint `json:"failures"`
	Slow     uint `json:"slow,omitempty"`
}

// MarshalJSON encodes st with RetryAfter as retry_after_seconds.
func (st Status) MarshalJSON() ([]byte, error) {
	type plain Status
	return json.Marshal(struct {
		plain
		RetryAfter float64 `json:"retry_after_seconds"`
	}{plain(st), st.RetryAfter.Seconds()})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (st *Status) UnmarshalJSON(b []byte) error {
	type plain Status
	var v struct {
		plain
		RetryAfter float64 `json:"retry_after_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*st = Status(v.plain)
	switch ra := v.RetryAfter * float64(time.Second); {
	case ra <= 0:
	case ra >= float64(1<<63-1):
		st.RetryAfter = 1<<63 - 1
	default:
		st.RetryAfter = time.Duration(ra)
	}
	return nil
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
	// SlowCallDuration, if positive, makes a call that takes longer than it
	// a slow call, whatever its outcome (as resilience4j's
	// slowCallDurationThreshold): a closed breaker also opens when the share
	// of slow calls over Window reaches SlowCallRate, once at least
	// MinRequests calls were recorded. If zero, calls are not timed for
	// this rule.
	SlowCallDuration time.Duration
	// SlowCallRate is the share of slow calls that opens the breaker. It
	// must be in (0, 1]. If zero, 0.5.
	SlowCallRate float64
	// MaxConcurrent, if positive, bounds the calls of one key in flight at
	// once (on the client side: until RoundTrip returns). A call over the
	// bound is refused at once, without reaching the dependency and without
	// counting as a failure: the client side gets an error matching
	// ErrConcurrencyLimit, the server side 503 with Retry-After and a
	// problem+json body of type ProblemConcurrencyLimit. If zero, no bound.
	MaxConcurrent int
	// MinCallers is the number of distinct callers whose failures it takes
	// (within Window) before a closed server-side breaker (Handler) counts
	// failures at all, so that one caller who makes a route fail (a
	// malformed request that crashes it, a token that trips a bug) cannot
	// open the route for everyone. The client side (Transport) has one
	// caller and ignores it. If zero, 3. 1 lets any caller open a route.
	MinCallers int
	// Caller identifies the caller of a server-side request for
	// MinCallers. If nil, the verified caller that authfallback put in the
	// context (issuer and subject), else a hash of the Authorization and
	// Cookie headers, else the client's IP address (r.RemoteAddr). Behind a
	// reverse proxy every anonymous request has the proxy's address: set
	// Caller to the client address the proxy vouches for, or anonymous
	// failures count as one caller's. Never take it from a header the
	// client can set freely, or one client can pose as many.
	Caller func(*http.Request) string
	// MaxKeys bounds the number of breakers held. When a new key arrives and
	// the registry is full, the least recently used breakers are evicted:
	// closed ones first, then, when every breaker held is open or half-open
	// (an attacker who makes calls to hosts of their choice fail), the least
	// recently used of those. A new key always gets a breaker. If zero,
	// 10,000.
	MaxKeys int
	// Key maps a request to its breaker's key. If nil, Transport uses the
	// request URL's host (host:port, lower-cased) and Handler uses the
	// method and r.Pattern, the route pattern that matched ("GET /orders"
	// under ServeMux, and under chi v5.5.0 or later, which sets r.Pattern without the
	// method, too), or the method and "*" when it is empty.
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
	// again. A handler panic always counts as a failure. If nil,
	// [DefaultIsFailure]: errors, 429 Too Many Requests and 5xx statuses
	// other than 501 are failures; other 4xx statuses are not.
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
	// block. Events of one key may arrive out of order when transitions
	// race: StateChange.Seq orders them.
	OnStateChange func(StateChange)
	// OnCall, if set, is called for every call decided: let through and
	// counted (OutcomeSuccess, OutcomeFailure, OutcomeCanceled), refused by
	// an open breaker (OutcomeRejected) or answered by Cached or Fallback
	// instead (OutcomeFallback), or refused by MaxConcurrent
	// (OutcomeLimited). Like httptrace's hooks it may be nil, may be called
	// concurrently and must not block. When nil it costs nothing.
	OnCall func(CallEvent)
	// WriteProblem writes the server side's error responses (an open
	// circuit, the concurrency limit). If nil, p is written as RFC 9457
	// application/problem+json.
	WriteProblem func(w http.ResponseWriter, r *http.Request, p Problem)
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

	seq  atomic.Uint64 // StateChange.Seq
	seed maphash.Seed  // caller hashes
}

type entry struct {
	key  string
	cb   circuitbreaker.CircuitBreaker[any]
	win  window        // failure-rate window, live while closed
	used atomic.Uint64 // epoch of the last use

	inflight atomic.Int32 // calls in flight, with MaxConcurrent
	callers  failCallers  // recent failing callers, server side
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
	defaultSlowCallRate     = 0.5
	defaultMinCallers       = 3

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
	if cfg.Window < 0 || cfg.Delay < 0 || cfg.SlowCallDuration < 0 {
		panic("breaker: negative Window, Delay or SlowCallDuration")
	}
	if cfg.SlowCallRate < 0 || cfg.SlowCallRate > 1 {
		panic(fmt.Sprintf("breaker: SlowCallRate %v outside (0, 1]", cfg.SlowCallRate))
	}
	if cfg.MaxConcurrent < 0 || cfg.MinCallers < 0 {
		panic("breaker: negative MaxConcurrent or MinCallers")
	}
	if cfg.SlowCallRate == 0 {
		cfg.SlowCallRate = defaultSlowCallRate
	}
	if cfg.MinCallers == 0 {
		cfg.MinCallers = defaultMinCallers
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
		cfg.IsFailure = DefaultIsFailure
	}
	if cfg.Fallback != nil {
		d := *cfg.Fallback
		d.Body = slices.Clone(d.Body)
		cfg.Fallback = &d
	}
	return &Breaker{cfg: cfg, start: time.Now(), bucketNanos: max(1, int64(cfg.Window/windowBuckets)), seed: maphash.MakeSeed()}
}

// DefaultIsFailure is the classification used when Config.IsFailure is nil:
// an error, 429 Too Many Requests (a dependency that throttles is failing
// its callers as surely as one that errs), or a 5xx status other than 501
// Not Implemented.
func DefaultIsFailure(status int, err error) bool {
	if err != nil {
		return true
	}
	return status == http.StatusTooManyRequests || status >= 500 && status != http.StatusNotImplemented
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
			st.Requests, st.Failures, st.Slow = e.win.sums(idx)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y Status) int { return cmp.Compare(x.Key, y.Key) })
	return out
}

// get returns key's entry, creating it on first use.
func (b *Breaker) get(key string) *entry {
	var e *entry
	if m := b.read.Load(); m != nil {
		e = (*m)[key]
	}
	if e == nil {
		e = b.insertLogged(key)
	}
	b.touch(e)
	return e
}

// insertLogged is insert, then, outside b.mu (a slog handler is user code),
// the warning that open breakers were evicted.
func (b *Breaker) insertLogged(key string) *entry {
	e, open := b.insert(key)
	if open > 0 && b.cfg.Logger != nil {
		b.cfg.Logger.Warn("breaker: registry full of open breakers; evicted the least recently used",
			slog.String("key", key), slog.Int("evicted", open), slog.Int("max_keys", b.cfg.MaxKeys))
	}
	return e
}

// getBytes is get for a key built in a scratch buffer: the lookup of a key
// already held does not allocate.
func (b *Breaker) getBytes(key []byte) *entry {
	var e *entry
	if m := b.read.Load(); m != nil {
		e = (*m)[string(key)]
	}
	if e == nil {
		e = b.insertLogged(string(key))
	}
	b.touch(e)
	return e
}

func (b *Breaker) touch(e *entry) {
	if ep := b.epoch.Load(); e.used.Load() != ep {
		e.used.Store(ep)
	}
}

// insert returns key's entry, creating it, evicting others when the
// registry is full, and the number of open or half-open breakers evicted.
func (b *Breaker) insert(key string) (*entry, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.locked(key); e != nil {
		return e, 0
	}
	open := 0
	if len(b.keys) >= b.cfg.MaxKeys {
		open = b.evict()
	}
	e := &entry{key: key}
	e.win.active.Store(true)
	e.used.Store(b.epoch.Add(1))
	e.cb = b.build(e)
	if b.keys == nil {
		b.keys = make(map[string]*entry)
	}
	b.keys[key] = e
	return e, open
}

// evict removes the least recently used closed breakers, about an eighth
// of MaxKeys so that the scan is amortised, or, when none is closed, the
// least recently used open or half-open ones: breakers that calls to
// attacker-chosen hosts opened cannot fill the registry, and a real host
// in use is the most recently used. b.mu must be held; no breaker
// transitions here, so no listener runs under the lock. An evicted entry
// still in use by a call in flight is recorded to and then dropped.
func (b *Breaker) evict() (open int) {
	var closed, other []*entry
	for _, e := range b.keys {
		if e.cb.State() == circuitbreaker.ClosedState {
			closed = append(closed, e)
		} else {
			other = append(other, e)
		}
	}
	victims := closed
	if len(victims) == 0 {
		victims = other
	}
	slices.SortFunc(victims, func(x, y *entry) int { return cmp.Compare(x.used.Load(), y.used.Load()) })
	n := min(max(1, b.cfg.MaxKeys/8), len(victims))
	for _, e := range victims[:n] {
		delete(b.keys, e.key)
	}
	b.refresh() // no call may find an evicted entry in read
	if len(closed) == 0 {
		return n
	}
	return 0
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
	seq := b.seq.Add(1)
	if l := b.cfg.Logger; l != nil {
		lvl := slog.LevelInfo
		if to == Open {
			lvl = slog.LevelWarn
		}
		l.Log(context.Background(), lvl, "breaker: state change",
			slog.String("key", key), slog.String("from", from.String()), slog.String("to", to.String()))
	}
	if f := b.cfg.OnStateChange; f != nil {
		f(StateChange{Key: key, From: from, To: to, Seq: seq, At: time.Now()})
	}
}

// outcome of a call.
type outcome int

const (
	success outcome = iota
	failure
	ignored // cancelled by the caller
)

func (o outcome) String() string {
	switch o {
	case success:
		return OutcomeSuccess
	case failure:
		return OutcomeFailure
	}
	return OutcomeCanceled
}

// record feeds an outcome to e's breaker. The permit taken by
// TryAcquirePermit is released by every path.
func (b *Breaker) record(e *entry, o outcome) { b.recordCall(e, o, false, true) }

// recordCall is record for a call that may have been slow; counted is false
// for a server-side failure or slow call while too few distinct callers
// failed (MinCallers): a closed breaker then does not count it at all (it
// needs no permit back), so one caller's failures neither open it nor
// stay in its window to open it later.
func (b *Breaker) recordCall(e *entry, o outcome, slow, counted bool) {
	switch o {
	case success, failure:
		if !counted && e.cb.IsClosed() {
			return
		}
		// The window counts first: the failsafe-go call may open the
		// breaker and make the window stop counting.
		trip := b.windowRecord(e, o == failure, slow)
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
