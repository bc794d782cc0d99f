package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// width is the widest line print writes.
const width = 100

// wrap writes s to out in lines of at most width columns, the first
// prefixed with first, the others indented to its width.
func wrap(out io.Writer, first, s string) {
	indent := strings.Repeat(" ", len(first))
	line := first
	for _, w := range strings.Fields(s) {
		if len(line)+1+len(w) > width && strings.TrimSpace(line) != "" {
			fmt.Fprintln(out, strings.TrimRight(line, " "))
			line = indent
		}
		if line != first && line != indent {
			line += " "
		}
		line += w
	}
	fmt.Fprintln(out, strings.TrimRight(line, " "))
}

func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func secsOr(v float64, never string) string {
	if v < 0 {
		return never
	}
	return fmt.Sprintf("%.1f s", v)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (rep *report) print(out io.Writer) {
	f := rep.Fleet
	wrap(out, "", fmt.Sprintf("holdfast outage drill, fleet scenario: %d replicas per stack behind a round-robin proxy, "+
		"shared idempotency store %s; %s; %d sessions per stack (half exchange their token for an offline token while the IdP is down) "+
		"+1 revoked; token TTL %.0fs, IdP outage %.0fs, grace %.0fs.",
		f.Replicas, rep.Store, rep.Duration, rep.Sessions, f.TokenTTLSeconds, f.IdPOutageSeconds, rep.GraceSeconds))
	fmt.Fprintln(out)
	fmt.Fprintln(out, "timeline (letters mark the events on the chart)")
	for _, e := range rep.Events {
		lab := e.Label
		if lab == "" {
			lab = " "
		}
		wrap(out, fmt.Sprintf("  %s %5.1fs  ", lab, e.AtS), e.What)
	}
	fmt.Fprintln(out)

	h, n := f.Holdfast, f.Naive
	hd, nd := rep.Detail["holdfast"], rep.Detail["naive"]
	fmt.Fprintf(out, "%-52s %11s %11s   %s\n", "promise", "holdfast", "naive", "holdfast must")
	row := func(what, hv, nv, target string) {
		fmt.Fprintf(out, "%s\n", strings.TrimRight(fmt.Sprintf("%-52s %11s %11s   %s", what, hv, nv, target), " "))
	}
	row("writes acknowledged (2xx or 202)", fmt.Sprint(h.WritesAcknowledged), fmt.Sprint(n.WritesAcknowledged), "")
	row("lost writes (acked, never executed, not failed)", fmt.Sprint(h.LostWrites), fmt.Sprint(n.LostWrites), "0")
	row("duplicate executions downstream", fmt.Sprint(h.DuplicateExecutions), fmt.Sprint(n.DuplicateExecutions), "0")
	row("hard 401s within grace, IdP outage", fmt.Sprint(h.Hard401WithinGrace), fmt.Sprint(n.Hard401WithinGrace), "0")
	row("valid sessions' reads answered 2xx, IdP outage", pct(hd.ReadsOKInOutage, hd.ReadsInOutage), pct(nd.ReadsOKInOutage, nd.ReadsInOutage), "")
	row("replaced replica's first request verified", yesNo(h.ReplacedReplicaVerified), yesNo(n.ReplacedReplicaVerified), "yes")
	row("recovery: downstream back -> all normal, queue empty", secsOr(h.RecoverySeconds, "never"), secsOr(n.RecoverySeconds, "never"), "<= 10 s")
	row("override propagation (force and release)", secsOr(h.OverridePropagationSeconds, "never"), secsOr(n.OverridePropagationSeconds, "no switch"), "<= 1 s")
	fmt.Fprintln(out)

	fmt.Fprintln(out, "what the figures mean here")
	for _, sn := range stackNames {
		p, d := f.Holdfast, hd
		if sn == "naive" {
			p, d = f.Naive, nd
		}
		lead := fmt.Sprintf("  %-9s", sn)
		if p.LostWrites > 0 {
			wrap(out, lead, fmt.Sprintf("lost: %d acknowledged writes never executed and their clients were never told: %s.", p.LostWrites, strings.Join(d.LostIDs, ", ")))
		}
		if d.AckedThenFailed > 0 {
			wrap(out, lead, fmt.Sprintf("%d writes answered 202 later failed (their clients got an error, so not lost, but the 202 was not kept).", d.AckedThenFailed))
		}
		if len(d.QueueOutcomes) > 0 {
			n := 0
			for _, v := range d.QueueOutcomes {
				n += v
			}
			msg := fmt.Sprintf("the shared queue took %d writes; what it holds for them at the end, by replay status: %s.", n, counts(d.QueueOutcomes))
			if d.QueueOutcomes["401"] > 0 {
				msg += " A 401 is a queued write refused when replayed (the queue keeps the verified caller, not the token, " +
					"so a token that expired since does not refuse it: the caller itself was refused); it executed only if its client sent it again."
			}
			if d.QueuedWithBearer > 0 {
				msg += fmt.Sprintf(" %d queued requests were stored with their plaintext bearer token.", d.QueuedWithBearer)
			}
			wrap(out, lead, msg)
			if len(d.QueueOutcomesRevoked) > 0 {
				wrap(out, lead, "the revoked subject's queued writes, by replay status: "+counts(d.QueueOutcomesRevoked)+".")
			}
		}
		if d.QueuedThen401 > 0 {
			wrap(out, lead, fmt.Sprintf("%d writes answered 202 were answered 401 when polled: their poll's token was refused, "+
				"or the queued write was refused when replayed; their clients re-sent them with a new token.", d.QueuedThen401))
		}
		if p.DuplicateExecutions > 0 {
			why := "the downstream executed some writes more than once."
			if sn == "naive" {
				why = "its client retries every failed or timed-out call 3 times with no Idempotency-Key, and each client re-send executes again."
			}
			wrap(out, lead, fmt.Sprintf("duplicates: %d; %s", p.DuplicateExecutions, why))
		}
		if p.Hard401WithinGrace > 0 {
			wrap(out, lead, fmt.Sprintf("hard 401s within grace, by credential and replica: %s.", counts(d.Hard401By)))
			for k := range d.Hard401By {
				if strings.HasPrefix(k, "offline token") && strings.Contains(k, "fallback") {
					wrap(out, lead, "an offline token is accepted only by a replica in fallback mode; each replica enters "+
						"and leaves it on its own refresh schedule, so one not (or no longer) in fallback refuses it.")
					break
				}
			}
			if sn == "holdfast" {
				wrap(out, lead, "the grace window (exp + 10 min, in fallback mode) is given only to a token some replica "+
					"recorded as seen valid before the outage (shared through the StateStore); a 401 within it is a token "+
					"no replica recorded, or an offline token refused by a replica not (or no longer) in fallback mode.")
			}
		}
		if d.ReadsInOutage > d.ReadsOKInOutage {
			wrap(out, lead, fmt.Sprintf("failed reads in the IdP outage, by replica and answer: %s.", counts(d.ReadsRefusedBy)))
		}
		if !p.ReplacedReplicaVerified {
			first := strings.TrimSpace(statusText(d.Replaced.FirstStatus) + " " + d.Replaced.FirstProblem)
			why := "its disk holds no key cache, the IdP is down and the shared state held no key set for it"
			if len(d.ReplacedOKBy) > 0 {
				why += "; its 2xx by credential: " + counts(d.ReplacedOKBy) + " (an offline token needs no JWKS)"
			}
			if sn == "naive" {
				why = "keyfunc fetched no keys at start (the IdP was down), and refreshes on an unknown kid at most once per 5 minutes"
			}
			wrap(out, lead, fmt.Sprintf("replaced replica %s (empty disk) answered its first request %s; %s of its answers were 2xx for the rest of the outage: %s.",
				d.Replaced.Replica, first, pctF(d.ReplacedOKShare), why))
		}
		if p.RecoverySeconds < 0 {
			wrap(out, lead, "recovery never reached: "+d.RecoveryWhy+".")
		} else {
			wrap(out, lead, "recovery: "+d.RecoveryWhy+".")
		}
		if sn == "naive" {
			wrap(out, lead, "override: "+d.OverrideWhy+".")
		} else if p.OverridePropagationSeconds < 0 {
			wrap(out, lead, "override never reached every replica: "+d.OverrideWhy+".")
		} else {
			wrap(out, lead, "override: "+d.OverrideWhy+".")
		}
		if d.Unsettled > 0 {
			wrap(out, lead, fmt.Sprintf("%d writes still had no final answer when the drill ended.", d.Unsettled))
		}
	}
	fmt.Fprintln(out)

	fmt.Fprintf(out, "%-11s %-8s %8s %6s %8s %5s %5s %5s %5s %5s %5s %6s %6s\n",
		"phase", "stack", "requests", "2xx", "degraded", "202", "401", "5xx", "none", "re-s", "polls", "reads", "p99ms")
	for _, p := range rep.Phases {
		for _, sn := range stackNames {
			s := p.Stacks[sn]
			fmt.Fprintf(out, "%-11s %-8s %8d %6s %8s %5d %5d %5d %5d %5d %5d %6s %6.0f\n",
				p.Name, sn, s.Requests, pct(s.OK, s.Requests), pct(s.Degraded, s.Requests), s.Queued, s.S401, s.S5xx,
				s.NoAnswer, s.Resends, s.Polls, pct(s.ReadsOK, s.Reads), s.P99MS)
		}
	}
	wrap(out, "  ", "Per phase by send time. 2xx: answered 2xx (202 included). degraded: answered 2xx but marked "+
		"(Holdfast-Degraded: stale, degraded auth or mode; or 202 queued). none: no answer (timeout, reset). "+
		"re-s: client re-sends, a write sent again with the same Idempotency-Key because its answer never came, "+
		"was a 5xx, or was a 401 before the client got a new token. polls: a write answered 202 sent again "+
		"with its key to fetch its final answer. reads: share of GETs answered 2xx. p99ms: 99th percentile "+
		"latency; in ds-outage the downstream hangs: holdfast waits one 1 s call timeout before its breaker opens, "+
		"naive three (it retries every call 3 times).")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "why (degraded answers by marker; errors by status and problem type)")
	for _, p := range rep.Phases {
		for _, sn := range stackNames {
			s := p.Stacks[sn]
			if len(s.DegradedBy)+len(s.ErrorsBy) == 0 {
				continue
			}
			wrap(out, fmt.Sprintf("  %-11s %-8s ", p.Name, sn), "degraded: "+counts(s.DegradedBy)+"; errors: "+counts(s.ErrorsBy))
		}
	}
	rep.glossary(out)
	fmt.Fprintln(out)

	e := rep.Holdfast
	wrap(out, "", fmt.Sprintf("holdfast hooks, all replicas: auth fallback entered %d, left %d; offline tokens issued %d; "+
		"breaker openings %d; retries %d, give-ups %d; stale answers %d; idempotent replays %d, conflicts %d; "+
		"queued writes replayed %d.", e.FallbackEnter, e.FallbackExit, e.OfflineIssued, e.BreakerOpened, e.Retries,
		e.GiveUps, e.StaleServed, e.IdemReplays, e.IdemConflicts, e.Replayed))
	if e.ReplayErrors > 0 {
		wrap(out, "  replays that failed: ", fmt.Sprintf("%d, the last with: %s", e.ReplayErrors, e.LastReplayErr))
	}
	if len(e.ModeChanges) > 0 {
		wrap(out, "  mode changes: ", strings.Join(e.ModeChanges, "; "))
	}
	if len(e.Reconciled) > 0 {
		wrap(out, "  reconciled: ", strings.Join(e.Reconciled, "; "))
	}
	if rr := rep.Revoked; rr != nil {
		wrap(out, "", fmt.Sprintf("revoked subject %s: revoked at %.1fs while the IdP was down; IdP back at %.1fs; "+
			"a holdfast replica knew at %.1fs, every replica at %.1fs (%s; each polls the IdP's list itself), reconciled at %.1fs (-1: never).",
			rr.Subject, rr.RevokedAtS, rr.IdPBackS, rr.KnownAtS, rr.AllKnewAtS, knownBy(rr.KnownBy), rr.ReconciledAtS))
		for _, sn := range stackNames {
			st := rr.Stacks[sn]
			wrap(out, fmt.Sprintf("  %-9s", sn), fmt.Sprintf("accepted while the IdP was down %d (no one could know); once known: "+
				"accepted %d, refused %d; writes sent after and executed %d.", st.AcceptedWhileDown, st.AcceptedAfterKnown, st.RefusedAfterKnown, st.WritesExecutedAfterKnown))
			if st.AcceptedAfterKnown > 0 {
				wrap(out, "            ", fmt.Sprintf("accepted once a replica knew, the last %.1fs after, by replica, credential and marker: %s; "+
					"by a replica that knew itself: %d.", st.LastAcceptedAfterKnownS, counts(st.AcceptedAfterKnownBy), st.AcceptedByKnowing))
			}
		}
	}
	fmt.Fprintln(out)
	for _, c := range rep.Checks {
		mark := "PASS"
		switch {
		case c.Gap:
			mark = "GAP "
		case !c.Pass:
			mark = "FAIL"
		}
		wrap(out, fmt.Sprintf("%s %-9s ", mark, c.Name), c.What+": "+c.Value)
	}
	if rep.hasGaps() {
		wrap(out, "", "GAP: a promise today's code does not keep, named in -known-gaps: reported, not failing the drill.")
	}
}

func pctF(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

func (rep *report) hasGaps() bool {
	for _, c := range rep.Checks {
		if c.Gap {
			return true
		}
	}
	return false
}

// glossary explains the markers and problem types that appear in the why
// lines.
func (rep *report) glossary(out io.Writer) {
	known := []struct{ key, what string }{
		{"invalid-token", "401: the token was refused (expired past what the replica grants, refused by the fallback policy, or revoked)"},
		{"authentication-unavailable", "503: the replica has no trusted keys (a new replica until its first key refresh succeeds)"},
		{"downstream-failed", "502: the downstream call failed after its retries, or the breaker was open"},
		{"idempotency-key-in-use", "409: a re-send arrived while the first attempt with its key was still running"},
		{"stale-if-error", "a read answered with its last good response"},
		{"jwks-unreachable", "verified with the last-known-good keys while the IdP is down"},
		{"offline-token", "an offline token, verified with the fleet's own key"},
		{"expired-grace", "an expired token in its grace window (exp + 10 min; a replica saw it valid before the outage)"},
		{"revocations-stale", "verified while the revocation list could not be refreshed"},
		{"degraded", "the replica was in degraded mode"},
		{"202 queued", "the write was queued (degraded or read-only mode), to be replayed"},
	}
	seen := map[string]bool{}
	for _, p := range rep.Phases {
		for _, st := range p.Stacks {
			for k := range st.DegradedBy {
				seen[k] = true
			}
			for k := range st.ErrorsBy {
				if i := strings.IndexByte(k, ' '); i > 0 {
					seen[k[i+1:]] = true
				}
			}
		}
	}
	for _, g := range known {
		if seen[g.key] {
			wrap(out, fmt.Sprintf("  %-27s ", g.key), g.what)
		}
	}
}

// knownBy renders when each replica learned of the revocation.
func knownBy(m map[string]float64) string {
	if len(m) == 0 {
		return "none knew"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.1fs", k, m[k])
	}
	return strings.Join(parts, ", ")
}
