package degrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxDependencies bounds how many distinct dependency names a Controller
// tracks, so a caller that reports dynamic names cannot grow it without end.
const maxDependencies = 256

// Config configures a [Controller]. The zero value is usable.
type Config struct {
	// Dependencies maps a dependency name to the mode the service enters
	// while that dependency is down, e.g. {"idp": ReadOnly, "payments":
	// Degraded}. When several dependencies are down the worst mode wins. A
	// dependency that is not listed causes Degraded. Map it to Normal to
	// track it (in the status) without changing the mode.
	Dependencies map[string]Mode

	// Window is the sliding window over which each dependency's failure
	// rate is measured. If zero, 60 s.
	Window time.Duration
	// FailureRate is the fraction of failed reports in the window at or
	// above which a dependency is down. If zero, 0.2 (20 %).
	FailureRate float64
	// MinReports is the number of reports the window must hold before the
	// failure rate counts. If zero, 10.
	MinReports int

	// Tier classifies a request for the gate ([Controller.Handler]). If
	// nil, safe methods (GET, HEAD, OPTIONS, TRACE) are Read and every
	// other method is Write. A value other than Read, Write or Critical is
	// treated as Critical.
	Tier func(*http.Request) Tier
	// Queue receives the Write-tier requests that the gate does not let
	// through (all of them in Degraded and ReadOnly mode), e.g. the
	// idempotency package's queueing handler that answers 202 Accepted. If
	// nil, Write-tier requests pass in Degraded mode and are refused in
	// ReadOnly mode. [Controller.SetQueue] sets it after New, for a queue
	// that is built from the Controller's own hooks.
	Queue http.Handler

	// MaxConcurrent, if positive, bounds the requests the gate lets
	// through at once, and sheds by tier when the service is saturated:
	// Read requests once 3/4 of MaxConcurrent are in flight, Write requests
	// once 9/10 are, Critical requests only at MaxConcurrent, and a
	// Critical request waits up to ShedWait for a slot, ahead of every
	// other tier. A shed Read is answered from Stale when it holds a usable
	// response for it; every other shed request gets 503 with Retry-After: 1
	// and a problem+json body of type ProblemOverloaded, at once. Requests
	// handed to Queue, and refusals, take no slot. [Status] reports the
	// requests in flight. If zero, no bound.
	MaxConcurrent int
	// ShedWait bounds how long a Critical request waits for a slot when
	// MaxConcurrent are in flight. If zero, 5 ms. If negative, it does not
	// wait.
	ShedWait time.Duration
	// Stale, if set, answers shed Read requests with the last good
	// response it holds for them ([Stale.ServeStale]), marked stale and
	// "overloaded". It sees the request as it reaches the gate, before
	// authentication, so it finds only responses stored for callers without
	// credentials, unless StaleInside is set.
	Stale *Stale
	// StaleInside makes the gate pass a shed Read on, without a slot, to
	// Stale's Handler mounted inside it, after authentication: there the
	// verified caller is known, and the request gets the response stored
	// for its own access or the 503, without reaching the handler. Set it
	// only when Stale.Handler sits inside the gate (gate -> authentication
	// -> Stale.Handler -> ...): without it there, shed reads reach the
	// handler.
	StaleInside bool

	// Overrides, if set, shares the operator's overrides (the forced mode
	// and the forced state of dependencies) with every replica that uses
	// the same store: what [Controller.Force], [Controller.ForceDependency]
	// and the admin handler set is written to it, and the Controller reads
	// it every OverridePoll and applies what it holds. If nil, overrides
	// are this replica's alone.
	Overrides OverrideStore
	// OverridePoll is how often Overrides is read. If zero, 500 ms, so an
	// override reaches every replica within a second.
	OverridePoll time.Duration
	// RetryAfter is sent with refusals. If zero, 30 s.
	RetryAfter time.Duration

	// StatusCode returns the HTTP status the status handler answers with in
	// a mode, e.g. to make a load balancer take a read-only replica out of
	// rotation. If nil, 200 in every mode: the body says the mode, and a
	// replica that still serves reads stays in rotation.
	StatusCode func(Mode) int

	// OnModeChange, if not nil, is called after the mode changed. It is
	// called outside any lock, may be called concurrently (so two quick
	// changes may be seen out of order; ModeChange.At orders them) and must
	// not block.
	OnModeChange func(ModeChange)
	// OnGate, if not nil, is called for every request the gate decides
	// (allow, queue, refuse or shed). Like httptrace's hooks it may be
	// called concurrently and must not block. When nil it costs nothing.
	OnGate func(GateEvent)
	// WriteProblem writes the error responses of the gate (refusals,
	// shedding) and of the admin handler. If nil, p is written as RFC 9457
	// application/problem+json.
	WriteProblem func(w http.ResponseWriter, r *http.Request, p Problem)

	// Logger receives mode changes and dependency state changes. If nil,
	// nothing is logged.
	Logger *slog.Logger
	// AuditLog receives every override set or released (by the admin
	// handler or by a call), with its reason and, from the admin handler,
	// the operator's address and verified caller. If nil, slog.Default():
	// an operator's switch never leaves no trace.
	AuditLog *slog.Logger
}

// ModeChange describes a change of mode.
type ModeChange struct {
	From, To Mode
	// Reason says why the service is in mode To.
	Reason string
	// Forced is set when To was set by [Controller.Force].
	Forced bool
	At     time.Time
}

type depState struct {
	name     string
	causes   Mode
	win      window
	rateDown bool   // failure rate over threshold
	setDown  bool   // set by SetDown
	setWhy   string // reason given to SetDown
	forced   int8   // forceNone, forceDown or forceUp: an operator's override
	forceWhy string
	lastSeq  uint64 // of the last SetDownOrdered applied
	since    time.Time
	lastErr  time.Time
	// total and failed are the window's counts at the last evaluation.
	total, failed int
}

const (
	forceNone int8 = iota
	forceDown
	forceUp
)

func (d *depState) down() bool {
	switch d.forced {
	case forceDown:
		return true
	case forceUp:
		return false
	}
	return d.rateDown || d.setDown
}

type modeState struct {
	mode   Mode
	reason string
	since  time.Time
	forced bool
}

// Controller holds the service's mode and decides it from the reported
// health of its dependencies and from manual overrides. It is safe for
// concurrent use. [Controller.Mode] is a single atomic load, so the gate
// costs nothing measurable in Normal mode.
type Controller struct {
	cfg  Config
	log  *slog.Logger
	mode atomic.Int32

	mu         sync.Mutex
	cur        modeState
	forced     *modeState
	deps       map[string]*depState
	timeIn     [ReadOnly + 1]time.Duration
	timer      *time.Timer
	closed     bool
	pending    []depLog // dependency changes to log outside the lock
	components map[string]func() any

	queue    atomic.Pointer[http.Handler]
	lim      *limiter
	gen      atomic.Uint64 // local override writes done, so a poll never undoes a newer one
	inFlight atomic.Int64  // local override writes in flight (see writing)
	stop     chan struct{}
	stopped  sync.WaitGroup
}

// New returns a Controller in Normal mode. It copies cfg.
func New(cfg Config) *Controller {
	if cfg.FailureRate < 0 || cfg.FailureRate > 1 {
		panic("degrade: Config.FailureRate must be within [0, 1]")
	}
	deps := make(map[string]Mode, len(cfg.Dependencies))
	for k, v := range cfg.Dependencies {
		if !v.valid() {
			panic(fmt.Sprintf("degrade: invalid mode %d for dependency %q", v, k))
		}
		deps[k] = v
	}
	cfg.Dependencies = deps
	c := &Controller{
		cfg:        cfg,
		log:        orDiscard(cfg.Logger),
		deps:       make(map[string]*depState),
		components: make(map[string]func() any),
	}
	c.cur = modeState{mode: Normal, since: time.Now()}
	for name := range deps { // listed dependencies show in the status at once
		c.depLocked(name)
	}
	if cfg.Queue != nil {
		c.queue.Store(&cfg.Queue)
	}
	if cfg.MaxConcurrent < 0 {
		panic("degrade: negative Config.MaxConcurrent")
	}
	if cfg.MaxConcurrent > 0 {
		c.lim = newLimiter(cfg.MaxConcurrent, c.shedWait())
		if cfg.Stale != nil && cfg.StaleInside {
			cfg.Stale.inside.Store(true)
		}
	}
	if cfg.Overrides != nil {
		c.stop = make(chan struct{})
		c.stopped.Add(1)
		go c.pollOverrides(c.stop)
	}
	return c
}

// SetQueue sets the handler of the Write-tier requests the gate does not
// let through, as [Config.Queue] does, after New: a queue whose own
// construction needs the Controller (its hooks report to it) is attached
// once built, whatever the order of wiring. A nil h removes the queue. It is
// safe to call while requests are served.
func (c *Controller) SetQueue(h http.Handler) {
	if h == nil {
		c.queue.Store(nil)
		return
	}
	c.queue.Store(&h)
}

func (c *Controller) queueHandler() http.Handler {
	if p := c.queue.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Controller) shedWait() time.Duration {
	switch {
	case c.cfg.ShedWait > 0:
		return c.cfg.ShedWait
	case c.cfg.ShedWait < 0:
		return 0
	}
	return 5 * time.Millisecond
}

func (c *Controller) window() time.Duration {
	if c.cfg.Window > 0 {
		return c.cfg.Window
	}
	return 60 * time.Second
}

func (c *Controller) failureRate() float64 {
	if c.cfg.FailureRate > 0 {
		return c.cfg.FailureRate
	}
	return 0.2
}

func (c *Controller) minReports() int {
	if c.cfg.MinReports > 0 {
		return c.cfg.MinReports
	}
	return 10
}

func (c *Controller) retryAfter() time.Duration {
	if c.cfg.RetryAfter > 0 {
		return c.cfg.RetryAfter
	}
	return 30 * time.Second
}

// Mode returns the current mode. It is one atomic load.
func (c *Controller) Mode() Mode { return Mode(c.mode.Load()) }

// Reason returns why the service is in its current mode ("" in Normal mode
// unless forced).
func (c *Controller) Reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.reason
}

// depLocked returns the state of dependency name, creating it, or nil when
// the controller already tracks maxDependencies dependencies.
func (c *Controller) depLocked(name string) *depState {
	if d, ok := c.deps[name]; ok {
		return d
	}
	if len(c.deps) >= maxDependencies {
		return nil
	}
	causes, ok := c.cfg.Dependencies[name]
	if !ok {
		causes = Degraded
	}
	d := &depState{name: name, causes: causes, win: newWindow(c.window(), time.Now())}
	c.deps[name] = d
	return d
}

// Report records the outcome of one call to dependency: err == nil is a
// success, anything else a failure, except an error that matches
// context.Canceled (the caller gave up; that says nothing about the
// dependency), which is ignored. A dependency is down while its failure
// rate over [Config.Window] is at least [Config.FailureRate] with at least
// [Config.MinReports] reports, or while [Controller.SetDown] says so.
func (c *Controller) Report(dependency string, err error) {
	if err != nil && errors.Is(err, context.Canceled) {
		return
	}
	now := time.Now()
	c.mu.Lock()
	d := c.depLocked(dependency)
	if d == nil {
		c.mu.Unlock()
		c.logger().Warn("degrade: too many dependencies, report ignored", "dependency", truncate(dependency, 64))
		return
	}
	d.win.record(now, err != nil)
	if err != nil {
		d.lastErr = now
	}
	ch := c.evalLocked(now, d)
	c.mu.Unlock()
	c.notify(ch)
}

// SetDown marks dependency as down (or up again) regardless of its failure
// rate, with a short reason. It is meant for hooks: a circuit breaker's
// OnStateChange (open: down, closed: up), or authfallback's
// OnFallbackEnter/OnFallbackExit. A dependency is down while SetDown says
// so or its failure rate is over the threshold.
func (c *Controller) SetDown(dependency string, down bool, reason string) {
	c.SetDownOrdered(dependency, down, reason, 0)
}

// SetDownOrdered is SetDown for hooks whose events may arrive out of order,
// such as a breaker's OnStateChange (pass StateChange.Seq): a call whose seq
// is not above the last one applied for dependency is ignored, so a late
// "open" never leaves a dependency down after its "closed". A seq of 0 is
// always applied, like SetDown.
func (c *Controller) SetDownOrdered(dependency string, down bool, reason string, seq uint64) {
	now := time.Now()
	c.mu.Lock()
	d := c.depLocked(dependency)
	if d == nil {
		c.mu.Unlock()
		c.logger().Warn("degrade: too many dependencies, SetDown ignored", "dependency", truncate(dependency, 64))
		return
	}
	if seq != 0 {
		if seq <= d.lastSeq {
			c.mu.Unlock()
			return
		}
		d.lastSeq = seq
	}
	was := d.down()
	d.setDown = down
	d.setWhy = reason
	if d.down() != was {
		c.depChangedLocked(d, now)
	}
	ch := c.evalLocked(now, d)
	c.mu.Unlock()
	c.notify(ch)
}

// Force sets the mode by hand, whatever the dependencies report, until
// [Controller.Release]. Forcing Normal keeps the service in Normal mode
// while dependencies are down. The reason is cleaned like the admin
// handler's (control, invisible and bidi characters removed, 200 bytes at
// most). With [Config.Overrides] the override is written to the store, for
// every replica; if that fails it holds on this replica only (until the
// store is read again) and the failure is logged. Every override is
// audited ([Config.AuditLog]). It panics if mode is not a valid Mode.
func (c *Controller) Force(mode Mode, reason string) {
	if !mode.valid() {
		panic(fmt.Sprintf("degrade: Force with invalid mode %d", mode))
	}
	_ = c.setMode(context.Background(), &ModeOverride{Mode: mode, Reason: reason, At: time.Now()}, "call")
}

// Release ends a [Controller.Force]: the mode follows the dependencies
// again, on every replica with [Config.Overrides].
func (c *Controller) Release() {
	_ = c.setMode(context.Background(), nil, "call")
}

// ForceDependency forces dependency down (a kill switch: "disable
// payments", the service then runs in the mode the dependency causes) or up
// (its failures are ignored), whatever its reports and [Controller.SetDown]
// say, until [Controller.ReleaseDependency]. Like Force, it is shared
// through [Config.Overrides] and audited.
func (c *Controller) ForceDependency(dependency string, down bool, reason string) {
	_ = c.setDependency(context.Background(), dependency, &DependencyOverride{Down: down, Reason: reason, At: time.Now()}, "call")
}

// ReleaseDependency ends a [Controller.ForceDependency].
func (c *Controller) ReleaseDependency(dependency string) {
	_ = c.setDependency(context.Background(), dependency, nil, "call")
}

// storeTimeout bounds a write to, or a read of, the override store.
const storeTimeout = 2 * time.Second

// setMode applies o (nil: release) here, then writes it to the store.
func (c *Controller) setMode(ctx context.Context, o *ModeOverride, by string) error {
	if o != nil {
		v := *o
		v.Reason = cleanReason(v.Reason)
		o = &v
	}
	defer c.writing()()
	now := time.Now()
	c.mu.Lock()
	c.applyModeLocked(o)
	ch := c.evalLocked(now, nil)
	c.mu.Unlock()
	c.notify(ch)
	err := c.write(ctx, func(ctx context.Context, s OverrideStore) error { return s.SetMode(ctx, o) })
	attrs := []any{"by", by, "shared", c.cfg.Overrides != nil && err == nil}
	if o == nil {
		attrs = append(attrs, "action", "release-mode")
	} else {
		attrs = append(attrs, "action", "force-mode", "mode", o.Mode.String(), "reason", o.Reason)
	}
	c.audit(err, attrs...)
	return err
}

// setDependency applies o (nil: release) to dependency here, then writes it
// to the store.
func (c *Controller) setDependency(ctx context.Context, dependency string, o *DependencyOverride, by string) error {
	dependency = cleanReason(dependency)
	if dependency == "" {
		return errors.New("degrade: empty dependency name")
	}
	if o != nil {
		v := *o
		v.Reason = cleanReason(v.Reason)
		o = &v
	}
	defer c.writing()()
	now := time.Now()
	c.mu.Lock()
	d := c.depLocked(dependency)
	if d == nil {
		c.mu.Unlock()
		return errTooManyDependencies
	}
	c.applyDepLocked(d, o, now)
	ch := c.evalLocked(now, nil)
	c.mu.Unlock()
	c.notify(ch)
	err := c.write(ctx, func(ctx context.Context, s OverrideStore) error { return s.SetDependency(ctx, dependency, o) })
	attrs := []any{"by", by, "shared", c.cfg.Overrides != nil && err == nil, "dependency", dependency}
	switch {
	case o == nil:
		attrs = append(attrs, "action", "release-dependency")
	case o.Down:
		attrs = append(attrs, "action", "force-dependency-down", "reason", o.Reason)
	default:
		attrs = append(attrs, "action", "force-dependency-up", "reason", o.Reason)
	}
	c.audit(err, attrs...)
	return err
}

var errTooManyDependencies = errors.New("degrade: too many dependencies")

// writing marks a local override write in flight until the returned func
// is called: a poll that overlaps it, in part or whole, is not applied
// (its read may predate the write), and the next poll applies the store.
func (c *Controller) writing() (done func()) {
	c.inFlight.Add(1)
	return func() {
		c.gen.Add(1)
		c.inFlight.Add(-1)
	}
}

func (c *Controller) write(ctx context.Context, f func(context.Context, OverrideStore) error) error {
	s := c.cfg.Overrides
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	return f(ctx, s)
}

func (c *Controller) audit(err error, attrs ...any) {
	l := c.cfg.AuditLog
	if l == nil {
		l = slog.Default()
	}
	if err != nil {
		l.Error("degrade: override applied on this replica only: the override store failed", append(attrs, "error", err)...)
		return
	}
	l.Warn("degrade: override", attrs...)
}

func (c *Controller) applyModeLocked(o *ModeOverride) {
	if o == nil || !o.Mode.valid() {
		c.forced = nil
		return
	}
	c.forced = &modeState{mode: o.Mode, reason: cleanReason(o.Reason), forced: true}
}

func (c *Controller) applyDepLocked(d *depState, o *DependencyOverride, now time.Time) {
	was := d.down()
	switch {
	case o == nil:
		d.forced, d.forceWhy = forceNone, ""
	case o.Down:
		d.forced, d.forceWhy = forceDown, cleanReason(o.Reason)
	default:
		d.forced, d.forceWhy = forceUp, cleanReason(o.Reason)
	}
	if d.down() != was {
		c.depChangedLocked(d, now)
	}
}

// applyOverrides makes the controller hold what the store holds.
func (c *Controller) applyOverrides(o Overrides, gen uint64) {
	now := time.Now()
	c.mu.Lock()
	if c.inFlight.Load() != 0 || c.gen.Load() != gen { // a local override was set meanwhile: the next poll sees it
		c.mu.Unlock()
		return
	}
	c.applyModeLocked(o.Mode)
	for name, d := range c.deps {
		if do, ok := o.Dependencies[name]; ok {
			c.applyDepLocked(d, &do, now)
		} else if d.forced != forceNone {
			c.applyDepLocked(d, nil, now)
		}
	}
	for name, do := range o.Dependencies {
		if _, ok := c.deps[name]; ok {
			continue
		}
		if d := c.depLocked(name); d != nil {
			c.applyDepLocked(d, &do, now)
		}
	}
	ch := c.evalLocked(now, nil)
	c.mu.Unlock()
	c.notify(ch)
}

func (c *Controller) overridePoll() time.Duration {
	if c.cfg.OverridePoll > 0 {
		return c.cfg.OverridePoll
	}
	return 500 * time.Millisecond
}

// pollOverrides reads the store at once and then every OverridePoll until
// Close.
func (c *Controller) pollOverrides(stop <-chan struct{}) {
	defer c.stopped.Done()
	t := time.NewTicker(c.overridePoll())
	defer t.Stop()
	failing := false
	for {
		gen := c.gen.Load()
		ctx, cancel := context.WithTimeout(context.Background(), max(storeTimeout, 2*c.overridePoll()))
		o, err := c.cfg.Overrides.Overrides(ctx)
		cancel()
		switch {
		case err != nil && !failing:
			failing = true
			c.logger().Warn("degrade: override store unreachable; keeping the last overrides read", "error", err)
		case err == nil:
			if failing {
				failing = false
				c.logger().Info("degrade: override store reachable again")
			}
			c.applyOverrides(o, gen)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// Close stops the timer that re-evaluates failure rates as reports age out
// of the window, and the reading of [Config.Overrides]. The Controller
// keeps working; failure rates are then only re-evaluated on the next
// Report.
func (c *Controller) Close() {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	stop := c.stop
	c.stop = nil
	c.mu.Unlock()
	if stop != nil {
		close(stop)
		c.stopped.Wait()
	}
}

// tick re-evaluates failure rates while a dependency is down by rate.
func (c *Controller) tick() {
	now := time.Now()
	c.mu.Lock()
	c.timer = nil
	ch := c.evalLocked(now, nil)
	c.mu.Unlock()
	c.notify(ch)
}

// countLocked recounts d's window and updates its state.
func (c *Controller) countLocked(d *depState, now time.Time) {
	total, failed := d.win.counts(now)
	d.total, d.failed = total, failed
	wasDown := d.down()
	d.rateDown = total >= c.minReports() && total > 0 && float64(failed) >= c.failureRate()*float64(total)
	if d.down() != wasDown {
		c.depChangedLocked(d, now)
	}
}

// depChangedLocked notes that d went down or came back. The log line is
// written by notify, outside the lock.
func (c *Controller) depChangedLocked(d *depState, now time.Time) {
	d.since = now
	c.pending = append(c.pending, depLog{name: d.name, down: d.down(), total: d.total, failed: d.failed})
}

type depLog struct {
	name          string
	down          bool
	total, failed int
}

// events are what a change of state announces once the lock is released.
type events struct {
	change *ModeChange
	deps   []depLog
}

// evalLocked recounts dependency only (every dependency if nil) and
// re-decides the mode. It returns what to announce.
func (c *Controller) evalLocked(now time.Time, only *depState) events {
	ch := c.decideLocked(now, only)
	ev := events{change: ch, deps: c.pending}
	c.pending = nil
	return ev
}

func (c *Controller) decideLocked(now time.Time, only *depState) *ModeChange {
	if only != nil {
		c.countLocked(only, now)
	}
	worst := Normal
	var reasons []string
	anyRateDown := false
	for _, d := range c.deps {
		if only == nil {
			c.countLocked(d, now)
		}
		anyRateDown = anyRateDown || d.rateDown
		if !d.down() {
			continue
		}
		if d.causes > worst {
			worst = d.causes
			reasons = reasons[:0]
		}
		if d.causes == worst && worst != Normal {
			reasons = append(reasons, d.reason())
		}
	}
	if anyRateDown && c.timer == nil && !c.closed {
		c.timer = time.AfterFunc(time.Duration(bucketWidth(c.window())), c.tick)
	}
	next := modeState{mode: worst}
	if len(reasons) > 0 {
		sort.Strings(reasons)
		next.reason = strings.Join(reasons, "; ")
	}
	if c.forced != nil {
		next = *c.forced
	}
	if next.mode == c.cur.mode && next.reason == c.cur.reason && next.forced == c.cur.forced {
		return nil
	}
	ch := &ModeChange{From: c.cur.mode, To: next.mode, Reason: next.reason, Forced: next.forced, At: now}
	if next.mode == c.cur.mode {
		next.since = c.cur.since // only the reason changed
		ch = nil
	} else {
		c.timeIn[c.cur.mode] += now.Sub(c.cur.since)
		next.since = now
	}
	c.cur = next
	c.mode.Store(int32(next.mode))
	return ch
}

func (d *depState) reason() string {
	if d.forced == forceDown {
		if d.forceWhy != "" {
			return d.name + ": forced down: " + d.forceWhy
		}
		return d.name + ": forced down"
	}
	if d.setDown {
		if d.setWhy != "" {
			return d.name + ": " + d.setWhy
		}
		return d.name + " down"
	}
	return fmt.Sprintf("%s: %d of %d calls failed", d.name, d.failed, d.total)
}

func (c *Controller) notify(ev events) {
	for _, l := range ev.deps {
		c.logger().Info("degrade: dependency state", "dependency", l.name, "down", l.down,
			"reports", l.total, "failures", l.failed)
	}
	ch := ev.change
	if ch == nil {
		return
	}
	c.logger().Warn("degrade: mode change", "from", ch.From.String(), "to", ch.To.String(),
		"reason", ch.Reason, "forced", ch.Forced)
	if c.cfg.OnModeChange != nil {
		c.cfg.OnModeChange(*ch)
	}
}

func (c *Controller) logger() *slog.Logger { return c.log }

func orDiscard(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
