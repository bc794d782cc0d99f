package main

import (
	"fmt"
	"maps"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
	"github.com/holdfast-go/holdfast/examples/internal/stack"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/retry"
)

// Targets of the promises.
const (
	targetRecovery    = 10 * time.Second
	targetPropagation = time.Second
	// targetRevocationSpread bounds the time from the first holdfast
	// replica learning of a revocation to every replica knowing of it:
	// each replica polls the IdP's list itself (the list is not shared),
	// and leaves fallback mode, refreshing it, within about one
	// StateFlushInterval (1 s) of another replica reaching the IdP.
	targetRevocationSpread = 2 * time.Second
)

// Promise names, for -known-gaps.
var promiseNames = []string{"lost", "duplicates", "hard401", "replaced", "recovery", "override", "revoked", "queued"}

func parseGaps(s string) (map[string]bool, error) {
	m := map[string]bool{}
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		ok := false
		for _, n := range promiseNames {
			ok = ok || n == g
		}
		if !ok {
			return nil, fmt.Errorf("-known-gaps: unknown promise %q (%s)", g, strings.Join(promiseNames, ", "))
		}
		m[g] = true
	}
	return m, nil
}

type report struct {
	Duration   string  `json:"duration"`
	Store      string  `json:"store"`
	Sessions   int     `json:"sessions_per_stack"`
	IntervalMS float64 `json:"interval_ms"`
	// GraceSeconds is authfallback's expired-token grace (the default).
	GraceSeconds float64 `json:"grace_seconds"`
	// Fleet holds the promises, measured for both stacks.
	Fleet fleetReport `json:"fleet"`
	// Detail explains the promises' figures.
	Detail  map[string]*stackDetail `json:"fleet_detail"`
	Phases  []phaseReport           `json:"phases"`
	Revoked *revokedReport          `json:"revoked_subject"`
	// Holdfast counts what the holdfast packages reported through their
	// hooks, every replica together.
	Holdfast holdfastEvents  `json:"holdfast_events"`
	Events   []event         `json:"events"`
	Timeline []timelinePoint `json:"timeline"`
	Checks   []check         `json:"checks"`

	// Replaced is filled by run: the replaced replica's first request.
	Replaced [2]replacedReport `json:"-"`
	sessions []session
}

// fleetReport is the `fleet` object of -json: exactly the promises' names.
type fleetReport struct {
	Replicas         int      `json:"replicas"`
	TokenTTLSeconds  float64  `json:"token_ttl_seconds"`
	IdPOutageSeconds float64  `json:"idp_outage_seconds"`
	Holdfast         promises `json:"holdfast"`
	Naive            promises `json:"naive"`
}

// promises are one stack's figures. -1 in a seconds figure means never.
type promises struct {
	// WritesAcknowledged: logical writes answered 2xx or 202 at least once.
	WritesAcknowledged int `json:"writes_acknowledged"`
	// LostWrites: acknowledged, never executed downstream, and not
	// reported failed to the client (its last answer was 2xx, 202 or none).
	LostWrites int `json:"lost_writes"`
	// DuplicateExecutions: downstream executions beyond the first, per
	// logical write.
	DuplicateExecutions int `json:"duplicate_executions"`
	// Hard401WithinGrace: 401s, during the IdP outage, to sessions whose
	// IdP token was valid when the outage began and whose exp + grace had
	// not passed (the revoked subject excluded).
	Hard401WithinGrace int `json:"hard_401_within_grace"`
	// ReadsOKShare: the valid sessions' reads answered 2xx during the IdP
	// outage, as a fraction.
	ReadsOKShare float64 `json:"reads_ok_share"`
	// ReplacedReplicaVerified: the replaced replica's first request (a
	// token every old replica had seen valid, still valid) was answered 2xx.
	ReplacedReplicaVerified bool `json:"replaced_replica_verified"`
	// RecoverySeconds: from the downstream healthy again to every replica
	// in Normal mode with the shared queue empty (naive: to every replica
	// answering 2xx again).
	RecoverySeconds float64 `json:"recovery_seconds"`
	// OverridePropagationSeconds: from the operator's call on one replica
	// to every replica in the forced mode, and again for the release; the
	// larger of the two.
	OverridePropagationSeconds float64 `json:"override_propagation_seconds"`
}

// stackDetail explains one stack's promises.
type stackDetail struct {
	Writes int `json:"writes"`
	// AckedThenFailed: acknowledged (202), never executed, and later
	// answered with an error (the client knows; not lost, but the 202's
	// promise broken).
	AckedThenFailed int `json:"acked_then_failed"`
	// QueuedThen401: writes answered 202, then 401 when polled: the queued
	// write was refused when replayed (its token had expired).
	QueuedThen401 int `json:"queued_then_401"`
	// QueueOutcomes counts the writes the shared store queued by what it
	// holds for them at the end: the status their replay stored, or
	// "still queued" (the revoked subject's apart).
	QueueOutcomes        map[string]int `json:"queue_outcomes,omitempty"`
	QueueOutcomesRevoked map[string]int `json:"queue_outcomes_revoked_subject,omitempty"`
	// QueuedWithBearer: queued requests stored with their Authorization
	// header, a plaintext bearer token in the shared store.
	QueuedWithBearer int `json:"queued_with_bearer_token"`
	// Unsettled: writes whose client has no final answer at the end.
	Unsettled int `json:"unsettled"`
	// LostIDs names up to 5 lost writes.
	LostIDs []string `json:"lost_ids,omitempty"`
	// Hard401By counts the hard 401s within grace by credential and
	// replica, e.g. "expired IdP token@r2".
	Hard401By map[string]int `json:"hard_401_by,omitempty"`
	// ReadsInOutage and ReadsOKInOutage are reads_ok_share's terms.
	ReadsInOutage   int `json:"reads_in_idp_outage"`
	ReadsOKInOutage int `json:"reads_ok_in_idp_outage"`
	// ReadsRefusedBy counts the failed reads of the outage by replica and
	// status.
	ReadsRefusedBy map[string]int `json:"reads_refused_by,omitempty"`
	Replaced       replacedReport `json:"replaced_replica"`
	// ReplacedOKShare: the replaced replica's answers that were 2xx during
	// the rest of the IdP outage.
	ReplacedOKShare float64 `json:"replaced_ok_share_in_idp_outage"`
	// ReplacedOKBy counts those 2xx by the credential they carried.
	ReplacedOKBy map[string]int `json:"replaced_ok_by_credential,omitempty"`
	// RecoveryWhy says what the replicas were doing when recovery was not
	// reached, or what ended it.
	RecoveryWhy string `json:"recovery_note"`
	// OverrideWhy says which replicas followed the override.
	OverrideWhy string `json:"override_note"`
}

type replacedReport struct {
	Replica      string  `json:"replica"`
	Replaces     string  `json:"replaces"`
	FirstStatus  int     `json:"first_status"`
	FirstProblem string  `json:"first_problem,omitempty"`
	TokenValidS  float64 `json:"token_valid_for_s"`
}

type event struct {
	AtS   float64 `json:"at_s"`
	Label string  `json:"label,omitempty"` // the chart's marker
	What  string  `json:"what"`
}

type phaseReport struct {
	Name   string            `json:"name"`
	FromS  float64           `json:"from_s"`
	ToS    float64           `json:"to_s"`
	Stacks map[string]*stats `json:"stacks"`

	from time.Duration // exact, for phaseOf
}

// stats are one stack's answers in one phase (by send time).
type stats struct {
	Requests int `json:"requests"`
	// OK: 2xx (202 included); Degraded: 2xx marked Holdfast-Degraded or
	// 202; Queued: 202.
	OK       int `json:"ok"`
	Degraded int `json:"degraded"`
	Queued   int `json:"queued"`
	S401     int `json:"status_401"`
	S5xx     int `json:"status_5xx"`
	Other4xx int `json:"status_other_4xx"`
	NoAnswer int `json:"no_answer"`
	Reads    int `json:"reads"`
	ReadsOK  int `json:"reads_ok"`
	Resends  int `json:"resends"`
	Polls    int `json:"polls"`
	// DegradedBy counts the degraded answers by Holdfast-Degraded value
	// ("202" for queued ones); ErrorsBy the others by status and problem.
	DegradedBy map[string]int `json:"degraded_by,omitempty"`
	ErrorsBy   map[string]int `json:"errors_by,omitempty"`
	P50MS      float64        `json:"p50_ms"`
	P99MS      float64        `json:"p99_ms"`

	lat []time.Duration
}

type timelinePoint struct {
	AtS float64 `json:"at_s"`
	// Requests, OKShare and DegradedShare per stack (holdfast, naive);
	// shares are -1 when no request was sent in the bucket.
	Requests      [2]int     `json:"requests"`
	OKShare       [2]float64 `json:"ok_share"`
	DegradedShare [2]float64 `json:"degraded_share"`
}

type check struct {
	Name  string `json:"name"`
	What  string `json:"what"`
	Value string `json:"value"`
	Pass  bool   `json:"pass"`
	// Gap marks a failed promise named in -known-gaps: reported, not
	// failing the drill.
	Gap bool `json:"known_gap,omitempty"`
	// Always marks the promises that fail the drill even without -check.
	Always bool `json:"always"`
}

// revokedReport follows the revoked subject through the drill.
type revokedReport struct {
	Subject    string  `json:"subject"`
	RevokedAtS float64 `json:"revoked_at_s"`
	IdPBackS   float64 `json:"idp_back_s"`
	// KnownAtS: when the first holdfast replica learned of the revocation
	// (OnRevocation); -1 if never.
	KnownAtS float64 `json:"known_at_s"`
	// AllKnewAtS: when the last replica of the fleet (as it was when
	// the first learned) learned of it; -1 if one never did.
	AllKnewAtS float64 `json:"all_replicas_knew_at_s"`
	// KnownBy: when each holdfast replica learned of it.
	KnownBy map[string]float64 `json:"known_by_replica_at_s,omitempty"`
	// ReconciledAtS: when a holdfast replica reported the subject's
	// degraded acceptances after the outage (OnReconcile); -1 if never.
	ReconciledAtS float64                  `json:"reconciled_at_s"`
	Stacks        map[string]*revokedStats `json:"stacks"`
}

type revokedStats struct {
	// AcceptedWhileDown: 2xx to requests sent after the revocation while
	// the IdP was down (no one could know).
	AcceptedWhileDown int `json:"accepted_while_idp_down"`
	// AcceptedAfterKnown: 2xx to requests sent after the revocation was
	// known to a replica (KnownAtS; for naive the same moment).
	AcceptedAfterKnown int `json:"accepted_after_known"`
	// AcceptedByKnowing: 2xx from a replica that knew of the revocation
	// when the request was sent (holdfast only). Target 0.
	AcceptedByKnowing int `json:"accepted_by_replica_that_knew"`
	RefusedAfterKnown int `json:"refused_after_known"`
	// AcceptedAfterKnownBy counts those 2xx by replica, credential and
	// marker, e.g. "r2 offline token (offline-token)".
	AcceptedAfterKnownBy map[string]int `json:"accepted_after_known_by,omitempty"`
	// LastAcceptedAfterKnownS: the last of them was sent this long after
	// the revocation was known.
	LastAcceptedAfterKnownS float64 `json:"last_accepted_after_known_s,omitempty"`
	// WritesExecutedAfterKnown: the subject's writes that executed
	// downstream although first sent after the revocation was known.
	WritesExecutedAfterKnown int `json:"writes_executed_after_known"`
}

// holdfastEvents counts what the holdfast packages reported.
type holdfastEvents struct {
	FallbackEnter int      `json:"auth_fallback_enter"`
	FallbackExit  int      `json:"auth_fallback_exit"`
	OfflineIssued int      `json:"offline_tokens_issued"`
	ModeChanges   []string `json:"mode_changes"`
	BreakerOpened int      `json:"breaker_openings"`
	Retries       int      `json:"retries"`
	GiveUps       int      `json:"retry_give_ups"`
	StaleServed   int      `json:"stale_served"`
	Replayed      int      `json:"queued_writes_replayed"`
	ReplayErrors  int      `json:"replay_errors"`
	LastReplayErr string   `json:"last_replay_error,omitempty"`
	IdemReplays   int      `json:"idempotent_replays"`
	IdemConflicts int      `json:"idempotency_conflicts"`
	Reconciled    []string `json:"reconciled"`
}

type recorder struct {
	mu sync.Mutex
	ev holdfastEvents
	t0 time.Time
	// revokedKnown and reconciled: when a holdfast replica first learned
	// of the revocation, and reported it after the outage.
	revokedKnown, reconciled time.Time
	// knownBy: when each holdfast replica learned of the revocation.
	knownBy map[string]time.Time
}

func newRecorder() *recorder { return &recorder{t0: time.Now(), knownBy: map[string]time.Time{}} }

func (r *recorder) since() string { return fmt.Sprintf("%.1fs", time.Since(r.t0).Seconds()) }

func (r *recorder) do(f func(*holdfastEvents)) {
	r.mu.Lock()
	f(&r.ev)
	r.mu.Unlock()
}

// hooks returns the hooks of the holdfast replica named replica.
func (r *recorder) hooks(replica string) stack.Hooks {
	return stack.Hooks{
		OnFallbackEnter: func(authfallback.FallbackEvent) { r.do(func(e *holdfastEvents) { e.FallbackEnter++ }) },
		OnFallbackExit:  func(authfallback.FallbackEvent) { r.do(func(e *holdfastEvents) { e.FallbackExit++ }) },
		OnOfflineIssue:  func(authfallback.OfflineIssueEvent) { r.do(func(e *holdfastEvents) { e.OfflineIssued++ }) },
		OnModeChange: func(ch degrade.ModeChange) {
			s := fmt.Sprintf("%s %s->%s", r.since(), ch.From, ch.To)
			r.do(func(e *holdfastEvents) { e.ModeChanges = append(e.ModeChanges, s) })
		},
		OnBreaker: func(ch stack.BreakerChange) {
			if ch.To == "open" {
				r.do(func(e *holdfastEvents) { e.BreakerOpened++ })
			}
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
		OnReplayed: func(n int, err error) {
			r.do(func(e *holdfastEvents) {
				e.Replayed += n
				if err != nil {
					e.ReplayErrors++
					e.LastReplayErr = err.Error()
				}
			})
		},
		OnReconcile: func(ev authfallback.ReconcileEvent) {
			line := fmt.Sprintf("%s %s: %s (%d degraded acceptances)", r.since(), ev.Subject, ev.Finding, ev.Accepted)
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
			if _, ok := r.knownBy[replica]; !ok {
				r.knownBy[replica] = now
			}
			r.mu.Unlock()
		},
	}
}

// measureInput is what build measures from.
type measureInput struct {
	loads              [2]*load
	ds                 [2]*downstream.Server
	sch                schedule
	start              time.Time
	samples            []sample
	counts             []queueCount
	forceAt, releaseAt time.Duration
	revokedAt, idpBack time.Time
	rec                *recorder
	finalReplicas      [2][]string
}

// phase names and bounds, by send time.
func (in measureInput) phases() []phaseReport {
	s := in.sch
	b := []struct {
		name     string
		from, to time.Duration
	}{
		{"healthy", 0, s.idpDown}, {"idp-outage", s.idpDown, s.idpBack}, {"idp-back", s.idpBack, s.hang},
		{"ds-outage", s.hang, s.dsBack}, {"recovery", s.dsBack, s.end}, {"final-polls", s.end, s.end + 20*time.Second},
	}
	out := make([]phaseReport, len(b))
	for i, p := range b {
		out[i] = phaseReport{Name: p.name, FromS: round(p.from.Seconds(), 1), ToS: round(p.to.Seconds(), 1), Stacks: map[string]*stats{}, from: p.from}
	}
	return out
}

func phaseOf(ps []phaseReport, at time.Duration) int {
	for i := len(ps) - 1; i >= 0; i-- {
		if at >= ps[i].from {
			return i
		}
	}
	return 0
}

func (s *stats) add(r result) {
	s.Requests++
	if r.ok() {
		s.OK++
	}
	if r.isDegraded() {
		s.Degraded++
		k := r.degraded
		if r.status == http.StatusAccepted {
			k = "202 queued"
		}
		inc(&s.DegradedBy, k)
	}
	switch {
	case r.status == http.StatusAccepted:
		s.Queued++
	case r.status == 0:
		s.NoAnswer++
		inc(&s.ErrorsBy, "no answer")
	case r.status == http.StatusUnauthorized:
		s.S401++
		inc(&s.ErrorsBy, errKey(r))
	case r.status >= 500:
		s.S5xx++
		inc(&s.ErrorsBy, errKey(r))
	case r.status >= 400:
		s.Other4xx++
		inc(&s.ErrorsBy, errKey(r))
	}
	switch r.op {
	case opRead:
		s.Reads++
		if r.ok() {
			s.ReadsOK++
		}
	case opResend:
		s.Resends++
	case opPoll:
		s.Polls++
	}
	s.lat = append(s.lat, r.latency)
}

func errKey(r result) string {
	if r.problem != "" {
		return fmt.Sprintf("%d %s", r.status, r.problem)
	}
	return fmt.Sprint(r.status)
}

func inc(m *map[string]int, k string) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k]++
}

func (s *stats) finish() {
	sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
	s.P50MS, s.P99MS = ms(percentile(s.lat, 0.5)), ms(percentile(s.lat, 0.99))
}

func (rep *report) build(in measureInput) {
	rep.Phases = in.phases()
	rep.Detail = map[string]*stackDetail{}
	revoked := map[int]bool{}
	for _, s := range rep.sessions {
		revoked[s.id] = s.revoked
	}
	idpDown, idpBack := in.sch.idpDown, in.sch.idpBack
	grace := time.Duration(rep.GraceSeconds * float64(time.Second))
	outageBegan := in.start.Add(idpDown)
	end := in.sch.end + 20*time.Second
	step := time.Duration(math.Max(float64(in.sch.end/100), float64(100*time.Millisecond)))
	nb := int(end/step) + 1
	var okB, degB, allB [2][]int

	for si, l := range in.loads {
		name := stackNames[si]
		d := &stackDetail{Replaced: rep.Replaced[si]}
		rep.Detail[name] = d
		p := &promises{}
		if si == stackNaive {
			p = &rep.Fleet.Naive
		} else {
			p = &rep.Fleet.Holdfast
		}
		per := make([]*stats, len(rep.Phases))
		for i := range per {
			per[i] = &stats{}
			rep.Phases[i].Stacks[name] = per[i]
		}
		okB[si], degB[si], allB[si] = make([]int, nb), make([]int, nb), make([]int, nb)
		var replacedN, replacedOK int
		l.mu.Lock()
		for _, r := range l.results {
			if revoked[r.session] {
				continue // reported apart
			}
			per[phaseOf(rep.Phases, r.at)].add(r)
			b := min(int(r.at/step), nb-1)
			allB[si][b]++
			if r.ok() {
				okB[si][b]++
			}
			if r.isDegraded() {
				degB[si][b]++
			}
			inOutage := r.at >= idpDown && r.at < idpBack
			if !inOutage {
				continue
			}
			if r.replica == d.Replaced.Replica && r.at >= in.sch.replace {
				replacedN++
				if r.ok() {
					replacedOK++
					cred := "IdP token"
					if r.cred == credOffline {
						cred = "offline token"
					}
					inc(&d.ReplacedOKBy, cred)
				}
			}
			if r.op == opRead {
				d.ReadsInOutage++
				if r.ok() {
					d.ReadsOKInOutage++
				} else {
					inc(&d.ReadsRefusedBy, fmt.Sprintf("%s %s", orDash(r.replica), errKey(r)))
				}
			}
			sent := in.start.Add(r.at)
			if r.status == http.StatusUnauthorized && r.tokenExp.After(outageBegan) && sent.Before(r.tokenExp.Add(grace)) {
				p.Hard401WithinGrace++
				cred := "IdP token"
				if r.cred == credOffline {
					cred = "offline token"
				} else if sent.After(r.tokenExp) {
					cred = "expired IdP token"
				}
				inc(&d.Hard401By, cred+"@"+orDash(r.replica)+detailNote(r.detail))
			}
		}
		execs := in.ds[si].ExecutionCounts()
		for _, id := range l.order {
			w := l.writes[id]
			if revoked[w.session] {
				continue
			}
			d.Writes++
			n := execs[w.id]
			if n > 1 {
				p.DuplicateExecutions += n - 1
			}
			if w.acked {
				p.WritesAcknowledged++
			}
			failed := w.last >= 400
			switch {
			case w.acked && n == 0 && !failed:
				p.LostWrites++
				if len(d.LostIDs) < 5 {
					d.LostIDs = append(d.LostIDs, fmt.Sprintf("%s (last answer %s)", w.id, statusText(w.last)))
				}
			case w.acked && n == 0:
				d.AckedThenFailed++
			}
			if !w.settled() {
				d.Unsettled++
			}
			if w.queuedThen401 {
				d.QueuedThen401++
			}
		}
		l.mu.Unlock()
		for _, s := range per {
			s.finish()
		}
		if d.ReadsInOutage > 0 {
			p.ReadsOKShare = round(float64(d.ReadsOKInOutage)/float64(d.ReadsInOutage), 4)
		}
		if replacedN > 0 {
			d.ReplacedOKShare = round(float64(replacedOK)/float64(replacedN), 4)
		}
		p.ReplacedReplicaVerified = d.Replaced.FirstStatus >= 200 && d.Replaced.FirstStatus < 300
	}
	rep.Fleet.Holdfast.RecoverySeconds, rep.Detail["holdfast"].RecoveryWhy = holdfastRecovery(in)
	if wo := in.sch.reads - in.sch.dsBack; wo < targetRecovery {
		rep.Detail["holdfast"].RecoveryWhy += fmt.Sprintf(" (clients sent only writes for %.1fs after the downstream came back, "+
			"less than the 10s bound: at this -duration the promise is not tested; 60s or more tests it)", wo.Seconds())
	}
	rep.Fleet.Naive.RecoverySeconds, rep.Detail["naive"].RecoveryWhy = naiveRecovery(in)
	rep.Fleet.Holdfast.OverridePropagationSeconds, rep.Detail["holdfast"].OverrideWhy = propagation(in)
	rep.Fleet.Naive.OverridePropagationSeconds, rep.Detail["naive"].OverrideWhy = -1, "the naive service has no mode switch"

	for b := range nb {
		pt := timelinePoint{AtS: round((time.Duration(b) * step).Seconds(), 2)}
		for si := range 2 {
			pt.Requests[si] = allB[si][b]
			pt.OKShare[si], pt.DegradedShare[si] = -1, -1
			if n := allB[si][b]; n > 0 {
				pt.OKShare[si] = round(float64(okB[si][b])/float64(n), 3)
				pt.DegradedShare[si] = round(float64(degB[si][b])/float64(n), 3)
			}
		}
		rep.Timeline = append(rep.Timeline, pt)
	}
	for len(rep.Timeline) > 0 && rep.Timeline[len(rep.Timeline)-1].Requests == [2]int{} {
		rep.Timeline = rep.Timeline[:len(rep.Timeline)-1]
	}
	in.rec.mu.Lock()
	rep.Holdfast = in.rec.ev
	in.rec.mu.Unlock()
	rep.buildRevoked(in)
}

// detailNote keeps what a 401's problem detail says beyond "invalid token".
func detailNote(d string) string {
	d = strings.TrimPrefix(d, "authfallback: ")
	d = strings.TrimPrefix(d, "invalid token: ")
	if d == "" {
		return ""
	}
	if len(d) > 90 {
		d = d[:87] + "..."
	}
	return " (" + d + ")"
}

func orDash(s string) string {
	if s == "" {
		return "proxy"
	}
	return s
}

// holdfastRecovery: from the downstream back to the end of the first count
// of the shared queue that found it empty and began while every replica
// was normal.
func holdfastRecovery(in measureInput) (float64, string) {
	for _, c := range in.counts {
		if c.n == 0 && c.from >= in.sch.dsBack {
			return round((c.to - in.sch.dsBack).Seconds(), 1), fmt.Sprintf("every replica normal at %.1fs, the shared queue found empty at %.1fs", c.from.Seconds(), c.to.Seconds())
		}
	}
	var last sample
	if len(in.samples) > 0 {
		last = in.samples[len(in.samples)-1]
	}
	q := "not counted (a replica was never normal)"
	if n := len(in.counts); n > 0 {
		q = fmt.Sprint(in.counts[n-1].n)
	}
	return -1, fmt.Sprintf("at the end %s, queued %s", last.modes, q)
}

// naiveRecovery: from the downstream back to every replica (of the final
// rotation) having answered 2xx to a request sent since.
func naiveRecovery(in measureInput) (float64, string) {
	first := map[string]time.Duration{}
	l := in.loads[stackNaive]
	l.mu.Lock()
	for _, r := range l.results {
		if r.at >= in.sch.dsBack && r.ok() {
			if t, ok := first[r.replica]; !ok || r.at+r.latency < t {
				first[r.replica] = r.at + r.latency
			}
		}
	}
	l.mu.Unlock()
	var worst time.Duration
	for _, name := range in.finalReplicas[stackNaive] {
		t, ok := first[name]
		if !ok {
			return -1, name + " answered no 2xx after the downstream came back"
		}
		worst = max(worst, t)
	}
	return round((worst - in.sch.dsBack).Seconds(), 1), "every replica answered 2xx again (no queue to drain)"
}

// propagation: the larger of force->all read-only and release->none
// read-only; -1 when the fleet never got there.
func propagation(in measureInput) (float64, string) {
	var toRO, toFree time.Duration = -1, -1
	var during string
	for _, s := range in.samples {
		if s.at >= in.forceAt && s.at < in.releaseAt {
			during = s.modes
			if toRO < 0 && s.allReadOnly {
				toRO = s.at - in.forceAt
			}
		}
		if s.at >= in.releaseAt && toFree < 0 && !s.anyRO {
			toFree = s.at - in.releaseAt
		}
	}
	switch {
	case toRO < 0:
		return -1, "while forced, " + during
	case toFree < 0:
		return -1, "the release never reached every replica"
	}
	return round(max(toRO, toFree).Seconds(), 2), fmt.Sprintf("all read-only after %.2fs, all released after %.2fs", toRO.Seconds(), toFree.Seconds())
}

func (rep *report) buildRevoked(in measureInput) {
	since := func(t time.Time) float64 {
		if t.IsZero() {
			return -1
		}
		return round(t.Sub(in.start).Seconds(), 1)
	}
	in.rec.mu.Lock()
	known, reconciled := in.rec.revokedKnown, in.rec.reconciled
	knownBy := maps.Clone(in.rec.knownBy)
	in.rec.mu.Unlock()
	rr := &revokedReport{
		Subject: revokedSubject, RevokedAtS: since(in.revokedAt), IdPBackS: since(in.idpBack),
		KnownAtS: since(known), ReconciledAtS: since(reconciled), Stacks: map[string]*revokedStats{},
		AllKnewAtS: -1, KnownBy: map[string]float64{},
	}
	var allKnew time.Time
	for _, name := range in.finalReplicas[stackHoldfast] {
		t, ok := knownBy[name]
		if !ok {
			allKnew = time.Time{}
			break
		}
		if t.After(allKnew) {
			allKnew = t
		}
	}
	rr.AllKnewAtS = since(allKnew)
	for name, t := range knownBy {
		rr.KnownBy[name] = since(t)
	}
	cut := known
	if cut.IsZero() { // never learned: judge from a few seconds after the IdP came back
		cut = in.idpBack.Add(5 * time.Second)
	}
	revoked := map[int]bool{}
	for _, s := range rep.sessions {
		revoked[s.id] = s.revoked
	}
	for si, l := range in.loads {
		st := &revokedStats{}
		execs := in.ds[si].ExecutionCounts()
		l.mu.Lock()
		for _, r := range l.results {
			if !revoked[r.session] {
				continue
			}
			sent := in.start.Add(r.at)
			switch {
			case sent.After(cut) && r.ok():
				st.AcceptedAfterKnown++
				if t, ok := knownBy[r.replica]; ok && si == stackHoldfast && sent.After(t) {
					st.AcceptedByKnowing++
				}
				cred := "IdP token"
				if r.cred == credOffline {
					cred = "offline token"
				}
				inc(&st.AcceptedAfterKnownBy, fmt.Sprintf("%s %s (%s)", orDash(r.replica), cred, r.degraded))
				st.LastAcceptedAfterKnownS = max(st.LastAcceptedAfterKnownS, round(sent.Sub(cut).Seconds(), 2))
			case sent.After(cut):
				st.RefusedAfterKnown++
			case sent.After(in.revokedAt) && sent.Before(in.idpBack) && r.ok():
				st.AcceptedWhileDown++
			}
		}
		for _, w := range l.writes {
			if revoked[w.session] && in.start.Add(w.sentAt).After(cut) && execs[w.id] > 0 {
				st.WritesExecutedAfterKnown++
			}
		}
		l.mu.Unlock()
		rr.Stacks[stackNames[si]] = st
	}
	rep.Revoked = rr
}

// judge sets the checks: holdfast's promises.
func (rep *report) judge(gaps map[string]bool) {
	h, d := rep.Fleet.Holdfast, rep.Detail["holdfast"]
	secs := func(v float64) string {
		if v < 0 {
			return "never"
		}
		return fmt.Sprintf("%.1fs", v)
	}
	rr := rep.Revoked
	hr := rr.Stacks["holdfast"]
	rep.Checks = []check{
		{Name: "lost", What: "no acknowledged write lost", Value: fmt.Sprintf("%d lost of %d acknowledged", h.LostWrites, h.WritesAcknowledged), Pass: h.LostWrites == 0, Always: true},
		{Name: "duplicates", What: "no write executed twice", Value: fmt.Sprintf("%d duplicate executions", h.DuplicateExecutions), Pass: h.DuplicateExecutions == 0, Always: true},
		{Name: "hard401", What: "no hard 401 within grace", Value: fmt.Sprintf("%d (%s)", h.Hard401WithinGrace, counts(d.Hard401By)), Pass: h.Hard401WithinGrace == 0},
		{Name: "replaced", What: "the replaced replica's first request verified", Value: fmt.Sprintf("%s answered %s %s", d.Replaced.Replica, statusText(d.Replaced.FirstStatus), d.Replaced.FirstProblem), Pass: h.ReplacedReplicaVerified},
		{Name: "recovery", What: "recovery within 10s", Value: secs(h.RecoverySeconds) + ": " + d.RecoveryWhy, Pass: h.RecoverySeconds >= 0 && h.RecoverySeconds <= targetRecovery.Seconds()},
		{Name: "override", What: "override reaches every replica within 1s", Value: secs(h.OverridePropagationSeconds) + ": " + d.OverrideWhy, Pass: h.OverridePropagationSeconds >= 0 && h.OverridePropagationSeconds <= targetPropagation.Seconds()},
		{Name: "revoked", What: fmt.Sprintf("the revoked subject refused by every replica that knows of the revocation, and every replica knows within %.0fs of the first", targetRevocationSpread.Seconds()),
			Value: fmt.Sprintf("%d accepted by a replica that knew; first knew at %.1fs, all at %.1fs; %d accepted fleet-wide after %.1fs, %d of its writes executed",
				hr.AcceptedByKnowing, rr.KnownAtS, rr.AllKnewAtS, hr.AcceptedAfterKnown, rr.KnownAtS, hr.WritesExecutedAfterKnown),
			Pass: rr.KnownAtS >= 0 && rr.AllKnewAtS >= 0 && hr.AcceptedByKnowing == 0 && rr.AllKnewAtS-rr.KnownAtS <= targetRevocationSpread.Seconds()},
	}
	refused, queued := d.QueueOutcomes["401"], 0
	for _, v := range d.QueueOutcomes {
		queued += v
	}
	rep.Checks = append(rep.Checks, check{Name: "queued", What: "queued writes keep the authorization they were accepted with",
		Value: fmt.Sprintf("%d of %d queued writes refused (401) when replayed", refused, queued), Pass: refused == 0})
	for i := range rep.Checks {
		c := &rep.Checks[i]
		c.Gap = !c.Pass && gaps[c.Name]
	}
}

func (rep *report) failed(all bool) bool {
	for _, c := range rep.Checks {
		if !c.Pass && !c.Gap && (all || c.Always) {
			return true
		}
	}
	return false
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
