package idempotency

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ReplayerConfig configures a Replayer. Idempotency and Handler are
// required.
type ReplayerConfig struct {
	// Idempotency is the one whose Enqueue queued the requests.
	Idempotency *Idempotency

	// Handler runs the queued requests: what serves them normally, without
	// the authentication in front (see Idempotency.Replay).
	Handler http.Handler

	// Authorize, if set, is asked before each queued request runs whether
	// its recorded caller (nil if none was recorded) may still act: a
	// revocation learnt since the request was queued, say. An error refuses
	// it: its stored outcome is a 403 ProblemReplayRefused (OnFailed is
	// called) and the handler never sees it.
	Authorize func(r *http.Request, c *Caller) error

	// Healthy reports whether the dependency the queued requests wait on is
	// believed healthy, e.g. func() bool { return ctl.Mode() ==
	// degrade.Normal }. While it is, the Replayer drains the queue, and a
	// replay that fails (5xx or 429) counts as an attempt. While it is not,
	// the Replayer makes half-open trials instead: one queued request every
	// TrialInterval, whose failure does not count (the outage explains it)
	// and whose success (ReplayEvent.Trial) says that the dependency
	// answers again: the Replayer then drains at once, and the service
	// should tell its outage detector (see OnReplayed). So the service
	// recovers without client traffic, under a write-only load too.
	//
	// If nil, the dependency is always taken as healthy: every failed
	// replay counts, and an outage longer than MaxAttempts times Interval
	// fails the requests at the head of the queue. Set Healthy.
	Healthy func() bool

	// Interval is how often the queue is drained when nothing kicks the
	// Replayer. If zero, 5 seconds.
	Interval time.Duration
	// TrialInterval is how often a trial is made while not Healthy (and
	// requests are queued). If zero, 1 second.
	TrialInterval time.Duration
	// Concurrency bounds the requests replayed at once by this Replayer.
	// If zero, 4.
	Concurrency int
	// MaxAttempts is the number of failed replays (counted in the store,
	// across replicas) after which a queued request fails for good: its
	// stored outcome becomes a 500 ProblemReplayFailed with "attempts" and
	// "last_status", which the polling client gets, so nothing waits
	// forever and nothing is dropped in silence. If zero, 5.
	MaxAttempts int

	// OnReplayed is called when a queued request ran and its response was
	// stored (Status, Attempts before it, Trial when it was a trial). A
	// trial's success (ev.Trial with a status below 500) says the dependency
	// answers again: wire it to the outage detector, e.g. degrade's
	// Controller.Recovered. May be nil; called concurrently; must not block.
	OnReplayed func(ReplayEvent)
	// OnFailed is called when a queued request failed for good (after
	// MaxAttempts, a panic, or a response too large to store). May be nil;
	// called concurrently; must not block.
	OnFailed func(ReplayEvent)

	// Logger receives drain errors. If nil, nothing is logged.
	Logger *slog.Logger
}

// ReplayEvent describes one replayed queued request. It carries no body,
// no header and no key.
type ReplayEvent struct {
	Method string
	// URL is the request URI (path and query).
	URL string
	// Status is the stored response's status (for OnFailed, 500; the
	// handler's last status is in the stored problem).
	Status int
	// Attempts is the number of failed replays before this outcome.
	Attempts int
	// Trial is set for a half-open trial (see ReplayerConfig.Healthy).
	Trial bool
}

// Replayer runs queued requests (Idempotency.Enqueue) when the service can
// take them: at once on Kick (call it from degrade's OnModeChange when the
// mode returns to Normal), every Interval, and by half-open trials while the
// dependency is down (see ReplayerConfig.Healthy). Several replicas may run
// one each over a shared store: claims hold leases, each request runs once.
// It is safe for concurrent use; Close stops it.
type Replayer struct {
	cfg    ReplayerConfig
	kick   chan struct{}
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex // one pass at a time
	cancel context.CancelFunc
	ctx    context.Context

	failedTrials atomic.Int64
}

// trialSpread is how many of the oldest queued requests trials take turns
// on.
const trialSpread = 4

// NewReplayer returns a started Replayer configured by cfg. It panics if
// cfg.Idempotency or cfg.Handler is nil.
func NewReplayer(cfg ReplayerConfig) *Replayer {
	if cfg.Idempotency == nil || cfg.Handler == nil {
		panic("idempotency: ReplayerConfig.Idempotency and Handler are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.TrialInterval <= 0 {
		cfg.TrialInterval = time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	p := &Replayer{cfg: cfg, kick: make(chan struct{}, 1), closed: make(chan struct{})}
	// Replays are not cancelled by Close once they run (a write half done
	// is worse); the context only stops new claims.
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.loop()
	return p
}

// Kick asks for a drain now (e.g. from degrade's OnModeChange, when the
// mode returns to Normal). It never blocks.
func (p *Replayer) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close stops the Replayer and waits for the replays that run. Requests it
// had claimed and not started go back to the queue. Close is idempotent.
func (p *Replayer) Close() {
	p.once.Do(func() {
		close(p.closed)
		p.cancel()
	})
	p.wg.Wait()
}

func (p *Replayer) healthy() bool { return p.cfg.Healthy == nil || p.cfg.Healthy() }

func (p *Replayer) loop() {
	defer p.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		case <-p.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		next := p.cfg.Interval
		if p.healthy() {
			_, _ = p.Drain(p.ctx)
		} else {
			next = p.cfg.TrialInterval
			if ok, _ := p.Trial(p.ctx); ok {
				_, _ = p.Drain(p.ctx)
			}
		}
		t.Reset(next)
	}
}

func (p *Replayer) pass(trial bool) *drain {
	d := &drain{
		x: p.cfg.Idempotency, handler: p.cfg.Handler, owner: p.cfg.Idempotency.newOwner(),
		batch: p.cfg.Concurrency, workers: p.cfg.Concurrency, maxAttempts: p.cfg.MaxAttempts,
		onReplayed: p.cfg.OnReplayed, onFailed: p.cfg.OnFailed, authorize: p.cfg.Authorize,
	}
	if trial {
		d.trial, d.batch, d.workers = true, 1, 1
	}
	return d
}

// Drain replays queued requests, Concurrency at a time, until none is left,
// one fails (ErrReplayHalted: the service has not recovered) or ctx ends.
// It returns the number of responses stored. The Replayer calls it itself;
// a service may call it too (at shutdown, say).
func (p *Replayer) Drain(ctx context.Context) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.pass(false).run(ctx)
	p.logErr(err)
	return n, err
}

// Trial replays the oldest queued request, as a half-open trial: a failure
// does not count as an attempt. After failed trials, the next ones take
// turns on the four oldest requests, so that one request that always fails
// cannot hide the dependency's recovery. It reports whether the handler's response
// was stored (false when the queue is empty).
func (p *Replayer) Trial(ctx context.Context) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.pass(true)
	// After k failed trials in a row, the trial takes the (k mod 4)+1-th
	// oldest request.
	d.batch = int(p.failedTrials.Load()%trialSpread) + 1
	_, err := d.run(ctx)
	if d.replayed.Load() > 0 && err == nil {
		p.failedTrials.Store(0)
	} else if err != nil {
		p.failedTrials.Add(1)
	}
	if err != nil && !errors.Is(err, ErrReplayHalted) {
		p.logErr(err)
	}
	// Only a response of the handler says the dependency answers: a
	// stored failure (a panic, a refusal) says nothing.
	return d.replayed.Load() > 0 && err == nil, err
}

func (p *Replayer) logErr(err error) {
	if err == nil || errors.Is(err, ErrReplayHalted) || errors.Is(err, context.Canceled) {
		return
	}
	if l := p.cfg.Logger; l != nil {
		l.Warn("idempotency: replaying queued requests", "err", err)
	}
}
