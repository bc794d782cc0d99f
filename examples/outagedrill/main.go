// Command outagedrill is holdfast's outage drill. In one process, on
// loopback only, it starts a fake identity provider (authtest), a downstream
// provider, the example service wired with every holdfast package
// (examples/internal/stack, the same code as examples/resilient-api) and the
// same service written naively, and drives both with the same load through
// four phases:
//
//	healthy            everything up
//	idp-outage         JWKS and token endpoints refuse connections; both services restart mid-phase
//	downstream-outage  the IdP is back; the downstream answers 503, then stops answering (timeouts)
//	recovery           everything up; queued writes replayed, breakers closed
//
// It prints a table per phase and stack, -json prints the same as JSON, and
// -svg FILE draws the success rate over time. It exits non-zero when the
// holdfast service loses a write or executes one twice, and with -check also
// when it misses another target of the drill (reads through the IdP outage,
// upstream attempts per request in the downstream outage).
//
//	go run ./examples/outagedrill
//	go run ./examples/outagedrill -duration 16s -json -check
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
)

const (
	stackHoldfast = 0
	stackNaive    = 1
)

var stackNames = [2]string{"holdfast", "naive"}

// phases and their share of the duration.
var phases = []struct {
	name  string
	share float64
}{
	{"healthy", 0.2},
	{"idp-outage", 0.3},
	{"downstream-outage", 0.3},
	{"recovery", 0.2},
}

type options struct {
	duration time.Duration
	workers  int
	interval time.Duration
	json     bool
	svg      string
	check    bool
	verbose  bool
	operator bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 40*time.Second, "total length of the four phases (the drill adds a few seconds to drain)")
	flag.IntVar(&o.workers, "workers", 6, "concurrent clients per stack")
	flag.DurationVar(&o.interval, "interval", 25*time.Millisecond, "pause between two requests of one client")
	flag.BoolVar(&o.json, "json", false, "print the results as JSON on stdout (and the table on stderr)")
	flag.StringVar(&o.svg, "svg", "", "write the success rate over time to this SVG file")
	flag.BoolVar(&o.check, "check", false, "exit non-zero when holdfast misses any target of the drill")
	flag.BoolVar(&o.operator, "naive-operator", true, "restart the naive service again when the IdP is back (without it keyfunc keeps answering 401 for up to 5 minutes)")
	flag.BoolVar(&o.verbose, "v", false, "log what the packages do (audit log included) to stderr")
	flag.Parse()
	if o.duration < 4*time.Second || o.workers < 1 || o.interval <= 0 {
		fmt.Fprintln(os.Stderr, "outagedrill: -duration must be at least 4s, -workers at least 1, -interval positive")
		os.Exit(2)
	}
	rep, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outagedrill:", err)
		os.Exit(2)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		rep.print(os.Stderr) // for people reading a CI log
	} else {
		rep.print(os.Stdout)
	}
	if o.svg != "" {
		if err := os.WriteFile(o.svg, rep.svg(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "outagedrill:", err)
			os.Exit(2)
		}
	}
	if rep.failed(o.check) {
		os.Exit(1)
	}
}

// drillClock tells the load generator the time since the start and the
// current phase.
type drillClock struct {
	start time.Time
	cur   atomic.Int32
}

func (c *drillClock) now() (time.Duration, int) { return time.Since(c.start), int(c.cur.Load()) }
func (c *drillClock) phase() int                { return int(c.cur.Load()) }

// front is the listener's handler; a restart swaps what is behind it.
type front struct{ h atomic.Pointer[http.Handler] }

func (f *front) set(h http.Handler)                               { f.h.Store(&h) }
func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*f.h.Load()).ServeHTTP(w, r) }

func scaled(d time.Duration, frac float64, min time.Duration) time.Duration {
	v := time.Duration(float64(d) * frac)
	if v < min {
		return min
	}
	return v
}

func run(o options) (*report, error) {
	logOut := io.Discard
	if o.verbose {
		logOut = os.Stderr
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))

	idp := authtest.New()
	defer idp.Close()
	dir, err := os.MkdirTemp("", "outagedrill")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	var ds [2]*downstream.Server
	var dsURL [2]string
	for i := range ds {
		ds[i] = downstream.New()
		srv := httptest.NewServer(ds[i])
		defer srv.Close()
		dsURL[i] = srv.URL
	}

	revs := newRevocationServer()
	revSrv := httptest.NewServer(revs)
	defer revSrv.Close()

	// The idempotency store outlives the holdfast service's restart, as a
	// Redis or PostgreSQL store would.
	store := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()

	rec := newRecorder()
	cfg := stack.Config{
		Issuer:              idp.Issuer(),
		Audience:            []string{idp.Audience()},
		JWKSURLs:            []string{idp.JWKSURL()},
		CacheFile:           filepath.Join(dir, "jwks.json"),
		RevocationURL:       revSrv.URL,
		RevocationCacheFile: filepath.Join(dir, "revocations.json"),
		KeyRefresh:          scaled(o.duration, 1.0/20, time.Second),
		Downstream:          dsURL[stackHoldfast],
		CallTimeout:         time.Second, // generous: the drill must not fail on a busy machine
		BreakerDelay:        scaled(o.duration, 1.0/40, 500*time.Millisecond),
		DetectWindow:        scaled(o.duration, 1.0/20, time.Second),
		ReplayEvery:         500 * time.Millisecond,
		Store:               store,
		AuditLog:            logger,
		Logger:              logger,
		Hooks:               rec.hooks(),
	}
	var services []*stack.Service
	var svcMu sync.Mutex
	startHoldfast := func() (*stack.Service, error) {
		s, err := stack.New(cfg)
		if err != nil {
			return nil, err
		}
		svcMu.Lock()
		services = append(services, s)
		svcMu.Unlock()
		return s, nil
	}
	defer func() {
		for _, s := range services {
			s.Close()
		}
	}()
	hf, err := startHoldfast()
	if err != nil {
		return nil, err
	}
	if hf.Verifier.Status().KeyCount == 0 {
		return nil, fmt.Errorf("the holdfast service has no keys at start")
	}
	var hfFront front
	hfFront.set(hf)
	hfSrv := httptest.NewServer(&hfFront)
	defer hfSrv.Close()

	nv := newNaive(idp.Issuer(), idp.Audience(), idp.JWKSURL(), dsURL[stackNaive], cfg.CallTimeout)
	defer nv.close()
	nvSrv := httptest.NewServer(nv)
	defer nvSrv.Close()

	var tokens []token
	for i := range 4 {
		sub := fmt.Sprintf("user-%d", i)
		tokens = append(tokens, token{subject: sub, raw: idp.Issue(jwt.MapClaims{"sub": sub, "scope": "read write"})})
	}

	extra := []token{{subject: revokedSubject, raw: idp.Issue(jwt.MapClaims{"sub": revokedSubject, "scope": "read write"})}}

	clock := &drillClock{start: rec.t0} // the hooks' times and the phases share one origin
	loads := [2]*load{
		newLoad(stackHoldfast, hfSrv.URL, tokens, o.interval, 5*time.Second, clock),
		newLoad(stackNaive, nvSrv.URL, tokens, o.interval, 5*time.Second, clock),
	}
	rep := &report{Duration: o.duration.String(), Workers: o.workers, IntervalMS: ms(o.interval)}
	var hits [2][]int64 // downstream hits at each phase start, and at the end
	mark := func() {
		for i := range ds {
			hits[i] = append(hits[i], ds[i].Hits())
		}
	}
	event := func(what string) {
		at, _ := clock.now()
		rep.Events = append(rep.Events, event{AtS: round(at.Seconds(), 1), What: what})
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx, o.workers, extra)
		}()
	}
	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(clock.start.Add(d))) }
	var at time.Duration
	bounds := make([]time.Duration, len(phases)+1)
	for i, p := range phases {
		bounds[i] = at
		at += time.Duration(float64(o.duration) * p.share)
	}
	bounds[len(phases)] = o.duration

	mark()
	event("healthy: everything up")
	// idp-outage
	sleepUntil(bounds[1])
	clock.cur.Store(1)
	mark()
	idp.SetDown(true)
	revs.down.Store(true)
	event("IdP down: JWKS and token endpoints refuse connections")
	sleepUntil(bounds[1] + (bounds[2]-bounds[1])/4)
	revokedAt := time.Now()
	revs.revoke(revokedSubject, revokedAt)
	event("the IdP revokes " + revokedSubject + " (its revocation list is down with it)")
	sleepUntil(bounds[1] + (bounds[2]-bounds[1])/2)
	old := hf
	hf, err = startHoldfast()
	if err != nil {
		cancel()
		wg.Wait()
		return nil, fmt.Errorf("holdfast restart: %w", err)
	}
	hfFront.set(hf)
	// The old process finishes its in-flight requests, then stops.
	time.AfterFunc(time.Second, old.Close)
	nv.restart()
	event(fmt.Sprintf("both services restarted; holdfast loaded %d keys from its cache file", hf.Verifier.Status().KeyCount))
	// downstream-outage
	sleepUntil(bounds[2])
	clock.cur.Store(2)
	mark()
	idp.SetDown(false)
	revs.down.Store(false)
	idpBack := time.Now()
	what := "IdP back; the naive service keeps its empty key set (keyfunc refreshes an unknown kid once per 5 min)"
	if o.operator {
		nv.restart()
		what = "IdP back; naive service restarted by its operator (keyfunc alone would wait up to 5 min)"
	}
	for _, d := range ds {
		d.SetMode(downstream.Fail5xx)
	}
	event(what + "; downstream answers 503")
	sleepUntil(bounds[2] + (bounds[3]-bounds[2])/2)
	for _, d := range ds {
		d.SetMode(downstream.Hang)
	}
	event("downstream stops answering (writes execute, answers never come)")
	// recovery
	sleepUntil(bounds[3])
	clock.cur.Store(3)
	mark()
	for _, d := range ds {
		d.SetMode(downstream.Healthy)
	}
	event("downstream back")
	sleepUntil(bounds[4])
	cancel()
	wg.Wait()
	event("load stopped")

	// Drain: replay what is still queued, then let clients collect the
	// final answers of their 202s.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	n, derr := hf.Drain(dctx)
	dcancel()
	event(fmt.Sprintf("holdfast drained its queue (%d replayed at the end)", n))
	if derr != nil {
		event("drain stopped: " + derr.Error())
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	pr := loads[stackHoldfast].poll(pctx)
	pcancel()
	rep.QueuedPolled, rep.QueuedConfirmed = pr.queued, pr.confirmed
	rep.RevokedQueued, rep.RevokedQueuedRefused = pr.revokedQueued, pr.revokedRefused
	event(fmt.Sprintf("clients polled %d queued writes: %d confirmed; %d of the revoked subject: %d refused (401) at replay",
		pr.queued, pr.confirmed, pr.revokedQueued, pr.revokedRefused))
	mark()

	rep.build(loads, ds, hits, bounds, rec)
	rep.buildRevoked(loads, clock.start, revokedAt, idpBack, cfg.KeyRefresh, rec)
	return rep, nil
}
