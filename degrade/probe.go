package degrade

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Target is one URL a [Probe] checks.
type Target struct {
	// Dependency is the name reported, e.g. "idp" or "payments".
	Dependency string
	// URL is fetched with GET.
	URL string
	// Check decides whether a response is healthy. If nil, a 2xx status is
	// healthy and anything else is a *StatusError.
	Check func(*http.Response) error
}

// StatusError is the failure a [Probe] reports for a response whose status
// is not healthy.
type StatusError struct {
	URL        string
	StatusCode int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("degrade: probe %s: status %d", e.URL, e.StatusCode)
}

// Probe is a synthetic canary: it GETs each target on an interval, with
// jitter so that replicas do not probe in step, and reports each outcome to
// Report (typically [Controller.Report]). The first round runs at once.
//
// Start it with [Probe.Start] and stop it with [Probe.Close]. The fields
// must not change after Start. A Probe is safe for concurrent use.
type Probe struct {
	// Targets are the URLs checked, each reported under its Dependency.
	Targets []Target
	// Report receives every outcome: a nil error for a healthy response.
	// If nil, outcomes are discarded.
	Report func(dependency string, err error)
	// Interval is the time between two checks of a target. If zero, 15 s.
	Interval time.Duration
	// Jitter is the largest random deviation from Interval, either way.
	// If zero, Interval/10. Negative means none.
	Jitter time.Duration
	// Timeout bounds one check. If zero, 5 s.
	Timeout time.Duration
	// Client sends the checks. If nil, a client with http.DefaultTransport
	// and no redirects followed is used.
	Client *http.Client

	mu  sync.Mutex
	run *probeRun // the running round, nil when stopped
}

// probeRun is one Start..Close: its own WaitGroup, so that a Start racing
// with Close never adds goroutines to the group Close waits for.
type probeRun struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (p *Probe) interval() time.Duration {
	if p.Interval > 0 {
		return p.Interval
	}
	return 15 * time.Second
}

func (p *Probe) jitter() time.Duration {
	switch {
	case p.Jitter > 0:
		return p.Jitter
	case p.Jitter < 0:
		return 0
	}
	return p.interval() / 10
}

func (p *Probe) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return 5 * time.Second
}

func (p *Probe) client() *http.Client {
	if p.Client != nil {
		return p.Client
	}
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Start starts one goroutine per target. Calling Start on a running Probe
// does nothing.
func (p *Probe) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &probeRun{cancel: cancel}
	p.run = run
	c := p.client()
	for _, t := range p.Targets {
		run.wg.Add(1)
		go p.loop(ctx, &run.wg, c, t)
	}
}

// Close stops the probe and waits for checks in flight to end. A stopped
// Probe may be started again.
func (p *Probe) Close() {
	p.mu.Lock()
	run := p.run
	p.run = nil
	p.mu.Unlock()
	if run != nil {
		run.cancel()
		run.wg.Wait()
	}
}

func (p *Probe) loop(ctx context.Context, wg *sync.WaitGroup, c *http.Client, t Target) {
	defer wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := p.check(ctx, c, t)
		if ctx.Err() != nil {
			return // stopped mid-check: not the dependency's fault
		}
		if p.Report != nil {
			p.Report(t.Dependency, err)
		}
		timer.Reset(p.next())
	}
}

// next returns the wait before the next check: Interval ± Jitter.
func (p *Probe) next() time.Duration {
	d, j := p.interval(), p.jitter()
	if j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j)+1)) - j
	}
	return max(d, time.Millisecond)
}

func (p *Probe) check(ctx context.Context, c *http.Client, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer httpx.DrainClose(resp.Body)
	if t.Check != nil {
		return t.Check(resp)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{URL: t.URL, StatusCode: resp.StatusCode}
	}
	return nil
}
