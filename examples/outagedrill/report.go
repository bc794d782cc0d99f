package main

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// Targets of the drill (issue 8).
const (
	targetReadsServedIdP = 100.0 // % of valid-token reads served through the IdP outage
	targetAttempts       = 1.3   // upstream attempts per request in the downstream outage
)

type report struct {
	Duration   string            `json:"duration"`
	Workers    int               `json:"workers_per_stack"`
	IntervalMS float64           `json:"interval_ms"`
	Phases     []phaseReport     `json:"phases"`
	Totals     map[string]*stats `json:"totals"`
	// QueuedPolled is the number of holdfast writes still answered 202
	// when the load stopped; QueuedConfirmed how many of them the client
	// then got a 2xx final answer for.
	QueuedPolled    int `json:"queued_polled"`
	QueuedConfirmed int `json:"queued_confirmed"`
	// RevokedQueued are the revoked subject's writes still answered 202
	// when the load stopped (queued before the revocation was known);
	// RevokedQueuedRefused how many of them were refused at replay.
	RevokedQueued        int             `json:"revoked_queued"`
	RevokedQueuedRefused int             `json:"revoked_queued_refused"`
	Holdfast             holdfastEvents  `json:"holdfast_events"`
	Revoked              *revokedReport  `json:"revoked_subject"`
	Events               []event         `json:"events"`
	Timeline             []timelinePoint `json:"timeline"`
	Checks               []check         `json:"checks"`
}

type event struct {
	AtS  float64 `json:"at_s"`
	What string  `json:"what"`
}

type phaseReport struct {
	Name   string            `json:"name"`
	FromS  float64           `json:"from_s"`
	ToS    float64           `json:"to_s"`
	Stacks map[string]*stats `json:"stacks"`
}

// stats are the figures of one stack in one phase.
type stats struct {
	Requests int `json:"requests"`
	// Served: 2xx answers (202 included); Queued: 202 Accepted; Degraded:
	// answers marked Holdfast-Degraded; Refused: every other answer,
	// errors and timeouts included.
	Served   int `json:"served"`
	Queued   int `json:"queued"`
	Degraded int `json:"degraded"`
	Refused  int `json:"refused"`
	// DegradedBy counts the served answers by their Holdfast-Degraded
	// value; RefusedBy the refused ones by status ("error" for no answer).
	DegradedBy map[string]int `json:"degraded_by,omitempty"`
	RefusedBy  map[string]int `json:"refused_by,omitempty"`
	// Reads and ReadsServed count the GETs; ReadsServedPct is their ratio.
	Reads          int     `json:"reads"`
	ReadsServed    int     `json:"reads_served"`
	ReadsServedPct float64 `json:"reads_served_pct"`
	// Writes are the new logical writes started in the phase.
	Writes int `json:"writes"`
	// UpstreamAttempts are the requests that reached the downstream during
	// the phase; AttemptsPerRequest divides them by the requests sent in
	// the phase (the revoked subject's included).
	UpstreamAttempts   int64   `json:"upstream_attempts"`
	AttemptsPerRequest float64 `json:"attempts_per_request"`
	// Duplicates: extra executions of writes started in the phase. Lost:
	// writes started in the phase that were acknowledged (2xx or 202) but
	// never executed by the end of the drill.
	Duplicates int     `json:"duplicate_side_effects"`
	Lost       int     `json:"lost_writes"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`

	lat []time.Duration
	// others counts the revoked subject's requests, reported apart but
	// sent to the same service: the downstream's hits include theirs.
	others int
}

type timelinePoint struct {
	AtS  float64    `json:"at_s"`
	Rate [2]float64 `json:"success_rate"` // holdfast, naive; -1 when no request
}

type check struct {
	What  string `json:"what"`
	Value string `json:"value"`
	Pass  bool   `json:"pass"`
	// Always marks the checks that fail the drill even without -check.
	Always bool `json:"always"`
	// Pending marks a check of a feature the stack does not wire yet; it
	// is shown and never fails the drill.
	Pending bool `json:"pending,omitempty"`
}

// holdfastEvents counts what the holdfast packages reported through their
// hooks.
type holdfastEvents struct {
	FallbackEnter int      `json:"auth_fallback_enter"`
	FallbackExit  int      `json:"auth_fallback_exit"`
	ModeChanges   []string `json:"mode_changes"`
	Breaker       []string `json:"breaker_changes"`
	Retries       int      `json:"retries"`
	GiveUps       int      `json:"retry_give_ups"`
	StaleServed   int      `json:"stale_served"`
	Replayed      int      `json:"queued_writes_replayed"`
	IdemReplays   int      `json:"idempotent_replays"`
	IdemConflicts int      `json:"idempotency_conflicts"`
	// Reconciled lists what OnReconcile reported once the IdP was back.
	Reconciled []string `json:"reconciled"`
}

type recorder struct {
	mu sync.Mutex
	ev holdfastEvents
	t0 time.Time
	// revokedKnown and reconciled are when the holdfast service learned
	// of the revoked subject's revocation, and reported it after the outage.
	revokedKnown, reconciled time.Time
}

func newRecorder() *recorder { return &recorder{t0: time.Now()} }

func (r *recorder) since() string { return fmt.Sprintf("%.1fs", time.Since(r.t0).Seconds()) }

func (r *recorder) hooks() stack.Hooks {
	return stack.Hooks{
		OnFallbackEnter: func(authfallback.FallbackEvent) { r.do(func(e *holdfastEvents) { e.FallbackEnter++ }) },
		OnFallbackExit:  func(authfallback.FallbackEvent) { r.do(func(e *holdfastEvents) { e.FallbackExit++ }) },
		OnModeChange: func(ch degrade.ModeChange) {
			s := fmt.Sprintf("%s %s -> %s (%s)", r.since(), ch.From, ch.To, ch.Reason)
			r.do(func(e *holdfastEvents) { e.ModeChanges = append(e.ModeChanges, s) })
		},
		OnBreaker: func(ch stack.BreakerChange) {
			s := fmt.Sprintf("%s %s %s: %s -> %s", r.since(), ch.Side, ch.Key, ch.From, ch.To)
			r.do(func(e *holdfastEvents) { e.Breaker = append(e.Breaker, s) })
		},
		OnRetry:  func(retry.RetryEvent) { r.do(func(e *holdfastEvents) { e.Retries++ }) },
		OnGiveUp: func(retry.GiveUpEvent) { r.do(func(e *holdfastEvents) { e.GiveUps++ }) },
		OnStale:  func(degrade.StaleEvent) { r.do(func(e *holdfastEvents) { e.StaleServed++ }) },
		OnIdempotency: func(kind string, _ idempotency.Event) {
			r.do(func(e *holdfastEvents) {
				switch kind {
				case "replay":
					e.IdemReplays++
				case "conflict":
					e.IdemConflicts++
				}
			})
		},
		OnReplayed: func(n int, _ error) { r.do(func(e *holdfastEvents) { e.Replayed += n }) },
		OnReconcile: func(ev authfallback.ReconcileEvent) {
			line := fmt.Sprintf("%s %s: %s, %d degraded acceptances", r.since(), ev.Subject, ev.Finding, ev.Accepted)
			now := time.Now()
			r.mu.Lock()
			r.ev.Reconciled = append(r.ev.Reconciled, line)
			if ev.Subject == revokedSubject && r.reconciled.IsZero() {
				r.reconciled = now
			}
			r.mu.Unlock()
		},
		OnRevocation: func(ev authfallback.RevocationEvent) {
			if ev.Subject != revokedSubject {
				return
			}
			now := time.Now()
			r.mu.Lock()
			if r.revokedKnown.IsZero() {
				r.revokedKnown = now
			}
			r.mu.Unlock()
		},
	}
}

func (r *recorder) do(f func(*holdfastEvents)) {
	r.mu.Lock()
	f(&r.ev)
	r.mu.Unlock()
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 1) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

func (s *stats) add(r result) {
	s.Requests++
	ok := r.status >= 200 && r.status < 300
	if ok {
		s.Served++
	} else {
		s.Refused++
		k := "error"
		if r.status != 0 {
			k = fmt.Sprint(r.status)
		}
		inc(&s.RefusedBy, k)
	}
	if r.status == http.StatusAccepted {
		s.Queued++
	}
	if ok && r.degraded != "" {
		s.Degraded++
		inc(&s.DegradedBy, r.degraded)
	}
	if r.op == opRead {
		s.Reads++
		if ok {
			s.ReadsServed++
		}
	}
	s.lat = append(s.lat, r.latency)
}

func inc(m *map[string]int, k string) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k]++
}

func (s *stats) finish() {
	if s.Reads > 0 {
		s.ReadsServedPct = round(100*float64(s.ReadsServed)/float64(s.Reads), 2)
	}
	if n := s.Requests + s.others; n > 0 {
		s.AttemptsPerRequest = round(float64(s.UpstreamAttempts)/float64(n), 3)
	}
	sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
	s.P50MS, s.P99MS = ms(percentile(s.lat, 0.5)), ms(percentile(s.lat, 0.99))
}

func (s *stats) merge(o *stats) {
	s.Requests += o.Requests
	s.Served += o.Served
	s.Queued += o.Queued
	s.Degraded += o.Degraded
	s.Refused += o.Refused
	s.others += o.others
	for k, v := range o.DegradedBy {
		inc(&s.DegradedBy, k)
		s.DegradedBy[k] += v - 1
	}
	for k, v := range o.RefusedBy {
		inc(&s.RefusedBy, k)
		s.RefusedBy[k] += v - 1
	}
	s.Reads += o.Reads
	s.ReadsServed += o.ReadsServed
	s.Writes += o.Writes
	s.UpstreamAttempts += o.UpstreamAttempts
	s.Duplicates += o.Duplicates
	s.Lost += o.Lost
	s.lat = append(s.lat, o.lat...)
}

func (rep *report) build(loads [2]*load, ds [2]*downstream.Server, hits [2][]int64, bounds []time.Duration, rec *recorder) {
	rep.Phases = make([]phaseReport, len(phases))
	for i, p := range phases {
		rep.Phases[i] = phaseReport{
			Name: p.name, FromS: round(bounds[i].Seconds(), 1), ToS: round(bounds[i+1].Seconds(), 1),
			Stacks: map[string]*stats{},
		}
	}
	rep.Totals = map[string]*stats{}
	step := bounds[len(bounds)-1] / 80
	nb := 81
	var ok, all [2][]int
	for si, l := range loads {
		name := stackNames[si]
		ok[si], all[si] = make([]int, nb), make([]int, nb)
		per := make([]*stats, len(phases))
		for i := range per {
			per[i] = &stats{}
			rep.Phases[i].Stacks[name] = per[i]
			per[i].UpstreamAttempts = hits[si][i+1] - hits[si][i]
		}
		l.mu.Lock()
		for _, r := range l.results {
			if r.subject == revokedSubject {
				per[r.phase].others++
				continue // reported apart
			}
			per[r.phase].add(r)
			b := int(r.at / step)
			if b >= nb {
				b = nb - 1
			}
			all[si][b]++
			if r.status >= 200 && r.status < 300 {
				ok[si][b]++
			}
		}
		execs := ds[si].ExecutionCounts()
		for _, w := range l.writes {
			if w.subject == revokedSubject {
				continue
			}
			per[w.phase].Writes++
			n := execs[w.id]
			if n > 1 {
				per[w.phase].Duplicates += n - 1
			}
			if w.acked && n == 0 {
				per[w.phase].Lost++
			}
		}
		l.mu.Unlock()
		tot := &stats{}
		for _, s := range per {
			tot.merge(s)
			s.finish()
		}
		tot.finish()
		rep.Totals[name] = tot
	}
	for b := range nb {
		var pt timelinePoint
		pt.AtS = round((time.Duration(b) * step).Seconds(), 2)
		for si := range 2 {
			pt.Rate[si] = -1
			if all[si][b] > 0 {
				pt.Rate[si] = round(float64(ok[si][b])/float64(all[si][b]), 3)
			}
		}
		rep.Timeline = append(rep.Timeline, pt)
	}
	rec.mu.Lock()
	rep.Holdfast = rec.ev
	rec.mu.Unlock()

	hf := rep.Totals["holdfast"]
	idp := rep.Phases[1].Stacks["holdfast"]
	down := rep.Phases[2].Stacks["holdfast"]
	rep.Checks = []check{
		{What: "holdfast: valid-token reads served through the IdP outage, restart included", Value: fmt.Sprintf("%.2f %% (target %.0f %%)", idp.ReadsServedPct, targetReadsServedIdP), Pass: idp.Reads > 0 && idp.ReadsServed == idp.Reads},
		{What: "holdfast: duplicate side effects", Value: fmt.Sprint(hf.Duplicates), Pass: hf.Duplicates == 0, Always: true},
		{What: "holdfast: lost writes", Value: fmt.Sprint(hf.Lost), Pass: hf.Lost == 0, Always: true},
		{What: "holdfast: upstream attempts per request in the downstream outage", Value: fmt.Sprintf("%.3f (target <= %.1f)", down.AttemptsPerRequest, targetAttempts), Pass: down.Requests > 0 && down.AttemptsPerRequest <= targetAttempts},
		{What: "holdfast: queued writes confirmed to their clients", Value: fmt.Sprintf("%d of %d", rep.QueuedConfirmed, rep.QueuedPolled), Pass: rep.QueuedConfirmed == rep.QueuedPolled},
	}
}

// counts renders a count map as "a 3, b 1", largest first.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func (rep *report) buildRevoked(loads [2]*load, start, revokedAt, idpBack time.Time, refresh time.Duration, rec *recorder) {
	since := func(t time.Time) float64 {
		if t.IsZero() {
			return -1
		}
		return round(t.Sub(start).Seconds(), 1)
	}
	rec.mu.Lock()
	known, reconciled := rec.revokedKnown, rec.reconciled
	rec.mu.Unlock()
	rr := &revokedReport{
		Subject: revokedSubject, RevokedAtS: since(revokedAt), IdPBackS: since(idpBack),
		KnownAtS: since(known), ReconciledAtS: since(reconciled), Stacks: map[string]*revokedStats{},
	}
	cut := known
	if cut.IsZero() { // never learned: judge from one refresh after the IdP came back
		cut = idpBack.Add(refresh + time.Second)
	}
	for si, l := range loads {
		st := &revokedStats{}
		l.mu.Lock()
		for _, r := range l.results {
			if r.subject != revokedSubject {
				continue
			}
			sent := start.Add(r.at)
			ok := r.status >= 200 && r.status < 300
			switch {
			case sent.After(cut) && ok:
				st.AcceptedAfterKnown++
			case sent.After(cut):
				st.RefusedAfterKnown++
			case sent.After(revokedAt) && sent.Before(idpBack) && ok:
				st.AcceptedAfterRevocation++
			}
		}
		l.mu.Unlock()
		rr.Stacks[stackNames[si]] = st
	}
	rep.Revoked = rr
	hf := rr.Stacks["holdfast"]
	rep.Checks = append(rep.Checks, check{
		What:  "holdfast: requests of the subject revoked during the outage accepted once the revocation was known",
		Value: fmt.Sprintf("%d (known at %.1fs)", hf.AcceptedAfterKnown, rr.KnownAtS),
		Pass:  !known.IsZero() && hf.AcceptedAfterKnown == 0,
	}, check{
		What:  "holdfast: queued writes of the revoked subject refused when replayed",
		Value: fmt.Sprintf("%d of %d", rep.RevokedQueuedRefused, rep.RevokedQueued),
		Pass:  rep.RevokedQueuedRefused == rep.RevokedQueued,
	})
	if !stack.RevocationsEnforced {
		for i := len(rep.Checks) - 2; i < len(rep.Checks); i++ {
			rep.Checks[i].Pending = true
			rep.Checks[i].Value += "; pending: the stack does not enforce revocations"
		}
	}
}

func (rep *report) failed(all bool) bool {
	for _, c := range rep.Checks {
		if !c.Pass && !c.Pending && (all || c.Always) {
			return true
		}
	}
	return false
}

func (rep *report) print(out io.Writer) {
	fmt.Fprintf(out, "holdfast outage drill: %s, %d clients per stack, one request each per %gms\n\n", rep.Duration, rep.Workers, rep.IntervalMS)
	for _, e := range rep.Events {
		fmt.Fprintf(out, "  %5.1fs  %s\n", e.AtS, e.What)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tstack\trequests\tserved\tqueued\tdegraded\trefused\treads ok\tupstream/req\tdup writes\tlost writes\tp50 ms\tp99 ms\t")
	row := func(phase, name string, s *stats) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.1f%%\t%.2f\t%d\t%d\t%.1f\t%.1f\t\n",
			phase, name, s.Requests, s.Served, s.Queued, s.Degraded, s.Refused, s.ReadsServedPct,
			s.AttemptsPerRequest, s.Duplicates, s.Lost, s.P50MS, s.P99MS)
	}
	for _, p := range rep.Phases {
		for _, name := range stackNames {
			row(p.Name, name, p.Stacks[name])
		}
	}
	for _, name := range stackNames {
		row("total", name, rep.Totals[name])
	}
	tw.Flush()
	fmt.Fprintln(out)
	fmt.Fprintln(out, "why (Holdfast-Degraded values of served answers; statuses of refused ones):")
	for _, p := range rep.Phases {
		for _, name := range stackNames {
			st := p.Stacks[name]
			if len(st.DegradedBy)+len(st.RefusedBy) == 0 {
				continue
			}
			fmt.Fprintf(out, "  %-18s %-9s degraded %s  refused %s\n", p.Name, name, counts(st.DegradedBy), counts(st.RefusedBy))
		}
	}
	fmt.Fprintln(out)
	e := rep.Holdfast
	fmt.Fprintf(out, "holdfast hooks: auth fallback entered %d, left %d; retries %d, give-ups %d; stale responses %d; idempotent replays %d, conflicts %d; queued writes replayed %d\n",
		e.FallbackEnter, e.FallbackExit, e.Retries, e.GiveUps, e.StaleServed, e.IdemReplays, e.IdemConflicts, e.Replayed)
	if len(e.ModeChanges) > 0 {
		fmt.Fprintf(out, "  mode: %s\n", strings.Join(e.ModeChanges, "; "))
	}
	if len(e.Reconciled) > 0 {
		fmt.Fprintf(out, "  reconciled: %s\n", strings.Join(e.Reconciled, "; "))
	}
	if len(e.Breaker) > 0 {
		opened := 0
		for _, b := range e.Breaker {
			if strings.HasSuffix(b, "-> open") {
				opened++
			}
		}
		fmt.Fprintf(out, "  breakers: %d changes, %d openings (trial calls failing re-open them); first %s; last %s\n",
			len(e.Breaker), opened, e.Breaker[0], e.Breaker[len(e.Breaker)-1])
	}
	if rr := rep.Revoked; rr != nil {
		fmt.Fprintf(out, "revoked subject %s: revoked at %.1fs while the IdP was down, IdP back at %.1fs, holdfast knew at %.1fs, reconciled at %.1fs (-1: never)\n",
			rr.Subject, rr.RevokedAtS, rr.IdPBackS, rr.KnownAtS, rr.ReconciledAtS)
		for _, name := range stackNames {
			st := rr.Stacks[name]
			fmt.Fprintf(out, "  %-9s accepted while the IdP was down %d; after the revocation was known: accepted %d, refused %d\n",
				name, st.AcceptedAfterRevocation, st.AcceptedAfterKnown, st.RefusedAfterKnown)
		}
	}
	fmt.Fprintln(out)
	for _, c := range rep.Checks {
		mark := "PASS"
		switch {
		case c.Pending:
			mark = "SKIP"
		case !c.Pass:
			mark = "FAIL"
		}
		fmt.Fprintf(out, "%s  %s: %s\n", mark, c.What, c.Value)
	}
}
