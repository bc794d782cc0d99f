// Command outagedrill is holdfast's outage drill: the outage as it really
// happens to a fleet, with the same service written naively beside it. In
// one process, on loopback only, it starts a fake identity provider
// (authtest, behind the fault injector), a downstream provider (behind the
// fault injector too), and per stack -replicas replicas of the example
// service (examples/internal/stack for holdfast, the same App wired naively
// for the other) behind a round-robin reverse proxy; the holdfast replicas
// share one idempotency store, one outage state of their verifiers and one
// store of the operator's overrides (in memory, or -store redis|postgres). The
// same client sessions drive both stacks through this timeline (scaled to
// -duration; at 60 s):
//
//	 0 s  healthy      tokens live 6 s; clients refresh them at half life
//	 9 s  IdP down     JWKS, token endpoint and revocation list reset every connection
//	11 s               a subject is revoked at the IdP (its list is down with it)
//	12 s               replica 3 is replaced by a new one on an empty disk (no key cache)
//	16 s               an operator forces read-only through replica 1's admin handler
//	21 s               ... and releases it (every replica must follow, both times)
//	27 s  IdP back     clients refresh and re-send their unanswered writes, same key
//	31 s  downstream   stops answering: writes execute and their answers never come
//	36 s               answers 503; clients send only writes (queued 202 by holdfast)
//	43 s  recovery     the downstream is back; for 12 s clients still send only writes
//	55 s               reads resume
//	60 s               load stops; clients collect the final answers of their 202s
//
// Every fault comes from the public fault package (the same Injector a team
// can use in staging). What the drill reports is measured from outside: the
// clients' answers, the downstream's executions per logical write, the
// replicas' modes and the shared store's queue.
//
//	go run ./examples/outagedrill
//	go run ./examples/outagedrill -json -check -svg drill.svg
//	go run ./examples/outagedrill -store redis
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/fault"
)

const (
	stackHoldfast = 0
	stackNaive    = 1
)

var stackNames = [2]string{"holdfast", "naive"}

type options struct {
	duration  time.Duration
	replicas  int
	sessions  int
	interval  time.Duration
	store     string
	redisAddr string
	pgDSN     string
	json      bool
	svg       string
	check     bool
	knownGaps string
	verbose   bool
	operator  bool
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "length of the timeline (the drill adds up to 10s for clients to collect final answers)")
	flag.IntVar(&o.replicas, "replicas", 3, "replicas per stack behind the round-robin proxy")
	flag.IntVar(&o.sessions, "sessions", 8, "client sessions per stack (half exchange their token for an offline token when the IdP is down), plus one whose subject is revoked")
	flag.DurationVar(&o.interval, "interval", 40*time.Millisecond, "pause between two requests of one session")
	flag.StringVar(&o.store, "store", "memory", "shared state of the holdfast replicas: memory (one in-process store), redis or postgres")
	flag.StringVar(&o.redisAddr, "redis", envOr("HOLDFAST_REDIS_ADDR", "127.0.0.1:6379"), "Redis address for -store redis")
	flag.StringVar(&o.pgDSN, "pg", envOr("HOLDFAST_PG_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL DSN for -store postgres")
	flag.BoolVar(&o.json, "json", false, "print the results as JSON on stdout (and the table on stderr)")
	flag.StringVar(&o.svg, "svg", "", "write the 2xx and degraded shares over time to this SVG file")
	flag.BoolVar(&o.check, "check", false, "exit non-zero when holdfast breaks a promise of the drill")
	flag.StringVar(&o.knownGaps, "known-gaps", "", "comma-separated promises (lost, duplicates, hard401, replaced, recovery, override, revoked, queued) that -check reports but does not fail on")
	flag.BoolVar(&o.operator, "naive-operator", true, "restart the naive replicas when the IdP is back (keyfunc alone keeps an empty key set for up to 5 minutes)")
	flag.BoolVar(&o.verbose, "v", false, "log what the packages do (audit log included) to stderr")
	flag.Parse()
	if o.duration < 20*time.Second || o.replicas < 2 || o.sessions < 2 || o.interval <= 0 {
		fmt.Fprintln(os.Stderr, "outagedrill: -duration must be at least 20s, -replicas and -sessions at least 2, -interval positive")
		os.Exit(2)
	}
	gaps, err := parseGaps(o.knownGaps)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outagedrill:", err)
		os.Exit(2)
	}
	rep, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outagedrill:", err)
		os.Exit(2)
	}
	rep.judge(gaps)
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// schedule is when each event of the timeline happens, since the start.
type schedule struct {
	idpDown, revoke, replace, force, release, idpBack time.Duration
	hang, fail5xx, dsBack, reads, end                 time.Duration
}

func newSchedule(d, ttl time.Duration) schedule {
	at := func(f float64) time.Duration { return time.Duration(float64(d) * f).Round(100 * time.Millisecond) }
	return schedule{
		idpDown: at(0.15), revoke: at(0.18), replace: at(0.15) + ttl/2, force: at(0.27), release: at(0.35),
		idpBack: at(0.45), hang: at(0.52), fail5xx: at(0.60), dsBack: at(0.72), reads: at(0.92), end: d,
	}
}

// sample is what the poller saw of the holdfast replicas at one moment.
type sample struct {
	at                 time.Duration
	allReadOnly, anyRO bool
	allNormal          bool
	modes              string
}

// queueCount is one count of the shared queue, started while every
// holdfast replica was normal.
type queueCount struct {
	from, to time.Duration
	n        int
}

func run(o options) (*report, error) {
	logOut := io.Discard
	if o.verbose {
		logOut = os.Stderr
	}
	logger := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))

	ttl := (o.duration / 10).Truncate(time.Second)
	sch := newSchedule(o.duration, ttl)
	tl := &timeline{tokenTTL: ttl}
	rep := &report{
		Duration: o.duration.String(), Store: o.store, Sessions: o.sessions, IntervalMS: ms(o.interval),
		Fleet:        fleetReport{Replicas: o.replicas, TokenTTLSeconds: ttl.Seconds(), IdPOutageSeconds: round((sch.idpBack - sch.idpDown).Seconds(), 1)},
		GraceSeconds: authfallback.DefaultExpiredGrace.Seconds(),
	}

	faults := fault.New(fault.Config{Logger: logger})
	idp := newIdPFront(faults, ttl)
	defer idp.close()

	var ds [2]*downstream.Server
	var dsURL [2]string
	for i := range ds {
		ds[i] = downstream.New()
		srv := httptest.NewServer(faults.Handler(depDownstream, ds[i]))
		defer srv.Close()
		dsURL[i] = srv.URL
	}

	sh, closeStore, err := openStore(context.Background(), o)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	store := newQueueWatch(sh.store)

	dir, err := os.MkdirTemp("", "outagedrill")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_, offlineKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}

	rec := newRecorder()
	tl.start = rec.t0
	cfg := stack.Config{
		Issuer:        idp.idp.Issuer(),
		Audience:      []string{idp.idp.Audience()},
		JWKSURLs:      []string{idp.jwksURL()},
		RevocationURL: idp.revocationsURL(),
		OfflineKey:    offlineKey, // shared by the fleet, as from a secret store
		KeyRefresh:    scaled(o.duration, 1.0/20, time.Second),
		CallTimeout:   time.Second,
		BreakerDelay:  scaled(o.duration, 1.0/40, 500*time.Millisecond),
		DetectWindow:  scaled(o.duration, 1.0/20, time.Second),
		ReplayEvery:   500 * time.Millisecond,
		Store:         store,
		AuthState:     sh.auth,
		Overrides:     sh.overrides,
		AuditLog:      logger,
		Logger:        logger,
	}
	nReplica := 0
	startHoldfast := func() (*replica, error) {
		nReplica++
		name := fmt.Sprintf("r%d", nReplica)
		c := cfg
		// Shared by the fleet, one instance for every replica (openStore,
		// per -store): the idempotency store and queue (cfg.Store), the
		// verifiers' outage state (cfg.AuthState: keys, tokens seen valid,
		// degraded acceptances), the operator's overrides (cfg.Overrides);
		// and the offline key, as from a secret store.
		c.Hooks = rec.hooks(name)
		c.Downstream = dsURL[stackHoldfast]
		// Each replica has a disk of its own: a new replica's is empty.
		c.CacheFile = filepath.Join(dir, name, "jwks.json")
		c.RevocationCacheFile = filepath.Join(dir, name, "revocations.json")
		if err := os.MkdirAll(filepath.Dir(c.CacheFile), 0o700); err != nil {
			return nil, err
		}
		svc, err := stack.New(c)
		if err != nil {
			return nil, err
		}
		return newReplica(name, svc, svc, nil), nil
	}
	startNaive := func(name string) *replica {
		nv := newNaive(idp.idp.Issuer(), idp.idp.Audience(), idp.jwksURL(), dsURL[stackNaive], cfg.CallTimeout)
		return newReplica(name, nv, nil, nv)
	}
	var fleets [2]*fleet
	{
		var hs, ns []*replica
		for i := range o.replicas {
			h, err := startHoldfast()
			if err != nil {
				return nil, err
			}
			if h.svc.Verifier.Status().KeyCount == 0 {
				return nil, fmt.Errorf("holdfast replica %s has no keys at start", h.name)
			}
			hs = append(hs, h)
			ns = append(ns, startNaive(fmt.Sprintf("r%d", i+1)))
		}
		fleets[stackHoldfast], fleets[stackNaive] = newFleet(hs), newFleet(ns)
	}
	defer fleets[stackHoldfast].close()
	defer fleets[stackNaive].close()

	sessions := make([]session, 0, o.sessions+1)
	for i := range o.sessions {
		sessions = append(sessions, session{id: i, subject: fmt.Sprintf("user-%d", i), offline: i%2 == 0})
	}
	sessions = append(sessions, session{id: o.sessions, subject: revokedSubject, offline: true, revoked: true})
	rep.sessions = sessions
	var loads [2]*load
	for i := range loads {
		loads[i] = newLoad(i, fleets[i].proxy.URL, idp, o.interval, tl)
	}

	event := func(label, what string) {
		rep.Events = append(rep.Events, event{AtS: round(tl.since().Seconds(), 1), Label: label, What: what})
	}
	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(tl.start.Add(d))) }

	// The poller: the holdfast replicas' modes, and the shared queue once
	// the downstream is back.
	var samples []sample
	var counts []queueCount
	var sampleMu sync.Mutex
	pollCtx, pollStop := context.WithCancel(context.Background())
	defer pollStop()
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pollCtx.Done():
				return
			case <-t.C:
			}
			s := sample{at: tl.since(), allReadOnly: true, allNormal: true}
			var modes []string
			for _, r := range fleets[stackHoldfast].current() {
				m := r.mode()
				modes = append(modes, r.name+"="+m.String())
				s.allReadOnly = s.allReadOnly && m == degrade.ReadOnly
				s.anyRO = s.anyRO || m == degrade.ReadOnly
				s.allNormal = s.allNormal && m == degrade.Normal
			}
			s.modes = strings.Join(modes, " ")
			sampleMu.Lock()
			samples = append(samples, s)
			sampleMu.Unlock()
		}
	}()
	// The queue counter: once the downstream is back and every replica is
	// normal, ask the shared store how many writes still wait.
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		for pollCtx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
			at := tl.since()
			sampleMu.Lock()
			normal := len(samples) > 0 && samples[len(samples)-1].allNormal
			sampleMu.Unlock()
			if at < sch.dsBack || !normal {
				continue
			}
			qctx, qcancel := context.WithTimeout(pollCtx, 10*time.Second)
			n, err := store.queued(qctx)
			qcancel()
			if err != nil {
				continue
			}
			sampleMu.Lock()
			counts = append(counts, queueCount{from: at, to: tl.since(), n: n})
			sampleMu.Unlock()
			if n == 0 {
				return
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx, sessions)
		}()
	}
	event("", fmt.Sprintf("healthy: %d replicas per stack, %d sessions each (+1 to be revoked)", o.replicas, o.sessions))

	// The probe: a token every replica sees valid before the outage; the
	// replaced replica's first request will carry it.
	sleepUntil(sch.idpDown - 1500*time.Millisecond)
	probeTok, probeExp := idp.issueFor("user-probe", 2*ttl)
	var pwg sync.WaitGroup
	for _, f := range fleets {
		for _, r := range f.current() {
			pwg.Add(1)
			go func() { defer pwg.Done(); probe(r.srv.URL, probeTok) }()
		}
	}
	pwg.Wait()

	// act is the schedule as it happened: phases and measures use it.
	act := sch
	sleepUntil(sch.idpDown)
	_ = faults.Set(depIdP, fault.Fault{Kind: fault.Outage})
	act.idpDown = tl.since()
	event("A", "IdP down (fault idp: outage): JWKS, token endpoint and revocation list reset connections")

	sleepUntil(sch.revoke)
	revokedAt := time.Now()
	idp.revs.revoke(revokedSubject, revokedAt)
	event("B", "the IdP revokes "+revokedSubject+" (its revocation list is down: no replica can know yet)")

	sleepUntil(sch.replace)
	act.replace = tl.since()
	{
		nh, err := startHoldfast()
		if err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("replacement replica: %w", err)
		}
		nn := startNaive(nh.name)
		for si, nr := range []*replica{nh, nn} {
			st, prob := probe(nr.srv.URL, probeTok)
			rep.Replaced[si] = replacedReport{Replica: nr.name, FirstStatus: st, FirstProblem: prob, TokenValidS: round(time.Until(probeExp).Seconds(), 1)}
			old := fleets[si].replace(o.replicas-1, nr)
			rep.Replaced[si].Replaces = old.name
		}
		event("C", fmt.Sprintf("replica r%d replaced by %s on an empty disk; its first request (a token valid %.0fs more): holdfast %s, naive %s",
			o.replicas, nh.name, time.Until(probeExp).Seconds(), statusText(rep.Replaced[0].FirstStatus), statusText(rep.Replaced[1].FirstStatus)))
	}

	sleepUntil(sch.force)
	first := fleets[stackHoldfast].current()[0]
	forceAt := tl.since()
	if err := adminMode(first.admin.URL, `{"mode":"read-only","reason":"drill: operator"}`); err != nil {
		event("D", "operator could not force read-only: "+err.Error())
	} else {
		event("D", "operator forces read-only through "+first.name+"'s admin handler (holdfast; naive has no switch)")
	}
	sleepUntil(sch.release)
	releaseAt := tl.since()
	if err := adminMode(first.admin.URL, `{"mode":"auto"}`); err != nil {
		event("E", "operator could not release: "+err.Error())
	} else {
		event("E", "operator releases the override through "+first.name+"'s admin handler")
	}

	sleepUntil(sch.idpBack)
	faults.Clear(depIdP)
	idpBack := time.Now()
	act.idpBack = tl.since()
	what := "IdP back: clients refresh, re-send unanswered writes with the same key"
	if o.operator {
		for _, r := range fleets[stackNaive].current() {
			r.nv.restart()
		}
		what += "; naive replicas restarted by their operator"
	}
	event("F", what)

	sleepUntil(sch.hang)
	_ = faults.Set(depDownstream, fault.Fault{Kind: fault.Hang, MaxHang: 10 * time.Second})
	act.hang = tl.since()
	event("G", "downstream hangs (fault downstream: hang): writes execute, answers never come")

	sleepUntil(sch.fail5xx)
	_ = faults.Set(depDownstream, fault.Fault{Kind: fault.Status, Status: http.StatusServiceUnavailable})
	tl.writeOnlyNow.Store(true)
	event("H", "downstream answers 503 (fault downstream: status); clients send only writes")

	sleepUntil(sch.dsBack)
	faults.Clear(depDownstream)
	act.dsBack = tl.since()
	event("I", "downstream back; clients still send only writes (no read reports the recovery)")

	sleepUntil(sch.reads)
	tl.writeOnlyNow.Store(false)
	act.reads = tl.since()
	event("J", "reads resume")

	sleepUntil(sch.end)
	act.end = tl.since()
	cancel()
	wg.Wait()
	event("K", "load stops; clients collect the final answers of their writes (at most 20s)")
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	var swg sync.WaitGroup
	for _, l := range loads {
		swg.Add(1)
		go func() {
			defer swg.Done()
			l.settle(sctx, sessions)
		}()
	}
	swg.Wait()
	scancel()
	event("", "done")
	pollStop()
	pollWG.Wait()
	octx, ocancel := context.WithTimeout(context.Background(), 20*time.Second)
	qo, qr, bearer := store.outcomes(octx)
	ocancel()

	rep.build(measureInput{
		loads: loads, ds: ds, sch: act, start: tl.start, samples: samples, counts: counts,
		forceAt: forceAt, releaseAt: releaseAt, revokedAt: revokedAt, idpBack: idpBack, rec: rec,
		finalReplicas: [2][]string{names(fleets[0].current()), names(fleets[1].current())},
	})
	d := rep.Detail["holdfast"]
	d.QueueOutcomes, d.QueueOutcomesRevoked, d.QueuedWithBearer = qo, qr, bearer
	return rep, nil
}

func names(rs []*replica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.name
	}
	return out
}

func scaled(d time.Duration, frac float64, min time.Duration) time.Duration {
	v := time.Duration(float64(d) * frac)
	if v < min {
		return min
	}
	return v
}

// probe sends one read with tok straight to a replica and returns the
// status (0: no answer) and the problem type of an error.
func probe(url, tok string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, url+"/items/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var p struct {
		Type string `json:"type"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&p)
	return resp.StatusCode, p.Type[strings.LastIndexByte(p.Type, '/')+1:]
}

// adminMode sends body to a replica's degrade AdminHandler.
func adminMode(url, body string) error {
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin handler answered %d", resp.StatusCode)
	}
	return nil
}

func statusText(st int) string {
	if st == 0 {
		return "no answer"
	}
	return fmt.Sprint(st)
}
