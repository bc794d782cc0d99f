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
	// ReadOnly mode.
	Queue http.Handler
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
	// Logger receives mode changes and dependency state changes. If nil,
	// nothing is logged.
	Logger *slog.Logger
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
	since    time.Time
	lastErr  time.Time
	// total and failed are the window's counts at the last evaluation.
	total, failed int
}

func (d *depState) down() bool { return d.rateDown || d.setDown }

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
	return c
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
	now := time.Now()
	c.mu.Lock()
	d := c.depLocked(dependency)
	if d == nil {
		c.mu.Unlock()
		c.logger().Warn("degrade: too many dependencies, SetDown ignored", "dependency", truncate(dependency, 64))
		return
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
// while dependencies are down. It panics if mode is not a valid Mode.
func (c *Controller) Force(mode Mode, reason string) {
	if !mode.valid() {
		panic(fmt.Sprintf("degrade: Force with invalid mode %d", mode))
	}
	now := time.Now()
	c.mu.Lock()
	c.forced = &modeState{mode: mode, reason: reason, forced: true}
	ch := c.evalLocked(now, nil)
	c.mu.Unlock()
	c.notify(ch)
}

// Release ends a [Controller.Force]: the mode follows the dependencies again.
func (c *Controller) Release() {
	now := time.Now()
	c.mu.Lock()
	c.forced = nil
	ch := c.evalLocked(now, nil)
	c.mu.Unlock()
	c.notify(ch)
}

// Close stops the timer that re-evaluates failure rates as reports age out
// of the window. The Controller keeps working; failure rates are then only
// re-evaluated on the next Report.
func (c *Controller) Close() {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
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
