package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/examples/internal/downstream"
)

// execute sends a ledger write to d directly, as a service would.
func execute(t *testing.T, d *downstream.Server, id string) {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, "/ledger", strings.NewReader(`{"write_id":"`+id+`"}`))
	require.NoError(t, err)
	w := &discard{h: http.Header{}}
	d.ServeHTTP(w, r)
	require.Equal(t, http.StatusCreated, w.code)
}

type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(c int)           { d.code = c }

// fixture is a drill of 100 s: IdP down 10-40 s, downstream back at 70 s.
func fixture(t *testing.T) (*report, measureInput) {
	t.Helper()
	start := time.Now().Add(-2 * time.Minute)
	sch := schedule{idpDown: 10 * time.Second, replace: 15 * time.Second, force: 20 * time.Second, release: 30 * time.Second,
		idpBack: 40 * time.Second, hang: 50 * time.Second, dsBack: 70 * time.Second, reads: 90 * time.Second, end: 100 * time.Second}
	var in measureInput
	in.start, in.sch, in.rec = start, sch, newRecorder()
	in.revokedAt, in.idpBack = start.Add(12*time.Second), start.Add(sch.idpBack)
	for i := range in.ds {
		in.ds[i] = downstream.New()
		in.loads[i] = &load{stack: i, writes: map[string]*write{}}
	}
	in.finalReplicas = [2][]string{{"r1", "r2"}, {"r1", "r2"}}
	rep := &report{GraceSeconds: 600, sessions: []session{{id: 0}, {id: 1}, {id: 9, revoked: true}}}
	return rep, in
}

func (l *load) addWrite(w *write) {
	l.writes[w.id] = w
	l.order = append(l.order, w.id)
}

func TestBuildMeasuresWritesFromTheDownstream(t *testing.T) {
	rep, in := fixture(t)
	hf, nv := in.loads[stackHoldfast], in.loads[stackNaive]
	// holdfast: a executed once (201); b queued (202) and never executed:
	// lost; c queued then refused (401): not lost, acked then failed; d
	// never acknowledged; e of the revoked subject, queued, never executed:
	// reported apart, not lost here.
	hf.addWrite(&write{id: "a", session: 0, acked: true, last: 201})
	hf.addWrite(&write{id: "b", session: 0, acked: true, last: 202})
	hf.addWrite(&write{id: "c", session: 1, acked: true, last: 401, queuedThen401: true})
	hf.addWrite(&write{id: "d", session: 1, last: 502})
	hf.addWrite(&write{id: "e", session: 9, acked: true, last: 202})
	execute(t, in.ds[stackHoldfast], "a")
	// naive: f executed three times, acknowledged.
	nv.addWrite(&write{id: "f", session: 0, acked: true, last: 201})
	for range 3 {
		execute(t, in.ds[stackNaive], "f")
	}
	rep.build(in)

	h, n := rep.Fleet.Holdfast, rep.Fleet.Naive
	assert.Equal(t, 3, h.WritesAcknowledged, "a, b and c; e is the revoked subject's")
	assert.Equal(t, 1, h.LostWrites)
	assert.Equal(t, 0, h.DuplicateExecutions)
	assert.Equal(t, 1, rep.Detail["holdfast"].AckedThenFailed)
	assert.Equal(t, 1, rep.Detail["holdfast"].QueuedThen401)
	assert.Equal(t, 2, rep.Detail["holdfast"].Unsettled, "b (202) and d (502)")
	assert.Equal(t, 2, n.DuplicateExecutions)
	assert.Equal(t, 0, n.LostWrites)
}

func TestBuildCountsHard401sWithinGraceAndReads(t *testing.T) {
	rep, in := fixture(t)
	hf := in.loads[stackHoldfast]
	validAtOutage := in.start.Add(13 * time.Second) // expires 3 s into the outage
	expiredBefore := in.start.Add(9 * time.Second)  // expired before the outage began
	hf.results = []result{
		{at: 20 * time.Second, op: opRead, status: 401, session: 0, tokenExp: validAtOutage, replica: "r1"},                     // counted
		{at: 25 * time.Second, op: opWrite, status: 401, session: 0, tokenExp: validAtOutage, cred: credOffline, replica: "r2"}, // counted
		{at: 20 * time.Second, op: opRead, status: 401, session: 1, tokenExp: expiredBefore, replica: "r1"},                     // token invalid at the start
		{at: 20 * time.Second, op: opRead, status: 401, session: 9, tokenExp: validAtOutage, replica: "r1"},                     // revoked subject
		{at: 45 * time.Second, op: opRead, status: 401, session: 0, tokenExp: validAtOutage, replica: "r1"},                     // after the outage
		{at: 5 * time.Second, op: opRead, status: 401, session: 0, tokenExp: validAtOutage, replica: "r1"},                      // before it
		{at: 21 * time.Second, op: opRead, status: 200, session: 0, tokenExp: validAtOutage, replica: "r2"},
		{at: 22 * time.Second, op: opRead, status: 503, problem: "authentication-unavailable", session: 1, tokenExp: validAtOutage, replica: "r3"},
	}
	rep.build(in)
	h := rep.Fleet.Holdfast
	assert.Equal(t, 2, h.Hard401WithinGrace)
	assert.Equal(t, map[string]int{"expired IdP token@r1": 1, "offline token@r2": 1}, rep.Detail["holdfast"].Hard401By)
	// Reads in the outage by valid sessions: the 401 of session 0, the 401
	// of session 1, the 200 and the 503.
	assert.Equal(t, 4, rep.Detail["holdfast"].ReadsInOutage)
	assert.Equal(t, 0.25, h.ReadsOKShare)
	assert.Equal(t, 1, rep.Detail["holdfast"].ReadsRefusedBy["r3 503 authentication-unavailable"])

	// The grace window ends: a 401 past exp + grace is not a hard 401
	// within grace.
	rep, in = fixture(t)
	rep.GraceSeconds = 5
	in.loads[stackHoldfast].results = []result{{at: 20 * time.Second, op: opRead, status: 401, session: 0, tokenExp: validAtOutage}}
	rep.build(in)
	assert.Equal(t, 0, rep.Fleet.Holdfast.Hard401WithinGrace, "exp 13 s + 5 s grace < 20 s")
}

func TestRecoveryAndOverridePropagationFromSamples(t *testing.T) {
	rep, in := fixture(t)
	in.forceAt, in.releaseAt = 20*time.Second, 30*time.Second
	s := func(at time.Duration, allRO, anyRO, allNormal bool) sample {
		return sample{at: at, allReadOnly: allRO, anyRO: anyRO, allNormal: allNormal}
	}
	in.samples = []sample{
		s(20*time.Second, false, true, false), s(20500*time.Millisecond, true, true, false),
		s(30*time.Second, true, true, false), s(30200*time.Millisecond, false, false, true),
		s(70*time.Second, false, false, false), s(75*time.Second, false, false, true), s(76*time.Second, false, false, true),
	}
	in.counts = []queueCount{{from: 60 * time.Second, to: 61 * time.Second, n: 0}, // before the downstream came back
		{from: 75 * time.Second, to: 75500 * time.Millisecond, n: 3}, {from: 75600 * time.Millisecond, to: 76 * time.Second, n: 0}}
	in.loads[stackNaive].results = []result{
		{at: 69 * time.Second, status: 200, replica: "r1"}, // before the downstream came back
		{at: 71 * time.Second, status: 200, replica: "r1", latency: time.Second},
		{at: 73 * time.Second, status: 502, replica: "r2"},
		{at: 74 * time.Second, status: 201, replica: "r2"},
	}
	rep.build(in)
	assert.Equal(t, 6.0, rep.Fleet.Holdfast.RecoverySeconds)
	assert.Equal(t, 4.0, rep.Fleet.Naive.RecoverySeconds)
	assert.Equal(t, 0.5, rep.Fleet.Holdfast.OverridePropagationSeconds)
	assert.Equal(t, -1.0, rep.Fleet.Naive.OverridePropagationSeconds)

	// One replica never follows: never.
	in.samples[1].allReadOnly = false
	in.samples[2].allReadOnly = false
	in.counts = in.counts[:2]
	rep, _ = fixture(t)
	rep.build(in)
	assert.Equal(t, -1.0, rep.Fleet.Holdfast.OverridePropagationSeconds)
	assert.Equal(t, -1.0, rep.Fleet.Holdfast.RecoverySeconds)
}

func TestJudgeAndKnownGaps(t *testing.T) {
	rep, in := fixture(t)
	in.loads[stackHoldfast].addWrite(&write{id: "b", session: 0, acked: true, last: 202}) // lost
	rep.Replaced[0] = replacedReport{Replica: "r3", FirstStatus: 200}
	rep.build(in)
	rep.judge(nil)
	assert.True(t, rep.failed(false), "a lost write fails the drill even without -check")

	gaps, err := parseGaps("lost, recovery,override,revoked")
	require.NoError(t, err)
	rep.judge(gaps)
	assert.False(t, rep.failed(true), "every failed promise is a known gap")
	for _, c := range rep.Checks {
		if c.Name == "replaced" {
			assert.True(t, c.Pass)
		}
		if c.Name == "lost" {
			assert.True(t, c.Gap)
		}
	}
	_, err = parseGaps("lost,typo")
	assert.Error(t, err)
}

func TestFleetJSONHasExactlyThePromisesNames(t *testing.T) {
	b, err := json.Marshal(fleetReport{})
	require.NoError(t, err)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m))
	assert.ElementsMatch(t, []string{"replicas", "token_ttl_seconds", "idp_outage_seconds", "holdfast", "naive"}, keys(m))
	var p map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(m["holdfast"], &p))
	assert.ElementsMatch(t, []string{"writes_acknowledged", "lost_writes", "duplicate_executions", "hard_401_within_grace",
		"reads_ok_share", "replaced_replica_verified", "recovery_seconds", "override_propagation_seconds"}, keys(p))
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestPrintFitsOneHundredColumns(t *testing.T) {
	rep, in := fixture(t)
	in.loads[stackHoldfast].addWrite(&write{id: strings.Repeat("w", 40), session: 0, acked: true, last: 202})
	in.loads[stackHoldfast].results = []result{{at: 20 * time.Second, status: 401, session: 0, tokenExp: in.start.Add(13 * time.Second),
		replica: "r1", detail: "authfallback: invalid token: " + strings.Repeat("a long reason ", 10)}}
	rep.Events = []event{{AtS: 1, Label: "A", What: strings.Repeat("an event that goes on and on ", 8)}}
	rep.build(in)
	rep.judge(nil)
	var out bytes.Buffer
	rep.print(&out)
	for i, line := range strings.Split(out.String(), "\n") {
		assert.LessOrEqual(t, len(line), width, "line %d: %q", i+1, line)
	}
	assert.Contains(t, out.String(), "lost: 1 acknowledged writes never executed")
}

func TestSVGIsWellFormedAndMarksEveryEvent(t *testing.T) {
	rep, in := fixture(t)
	in.loads[stackHoldfast].results = []result{{at: time.Second, status: 200}, {at: 20 * time.Second, status: 202}}
	rep.Events = []event{{AtS: 0, What: "start"}, {AtS: 10, Label: "A", What: "IdP <down>"}, {AtS: 40, Label: "B", What: "back"}}
	rep.build(in)
	dec := xml.NewDecoder(bytes.NewReader(rep.svg()))
	lines, areas, markers := 0, 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "polyline":
				lines++
			case "polygon":
				areas++
			case "line":
				for _, a := range se.Attr {
					if a.Name.Local == "stroke-dasharray" {
						markers++
					}
				}
			}
		}
	}
	assert.Equal(t, 2, lines, "a 2xx line per stack")
	assert.Equal(t, 2, areas, "a degraded area per stack")
	assert.Equal(t, 4, markers, "two labeled events, in both panels")
	// The chart's shares are the table's: the holdfast bucket at 20 s is
	// all degraded (202).
	var found bool
	for _, pt := range rep.Timeline {
		if pt.Requests[stackHoldfast] == 1 && pt.DegradedShare[stackHoldfast] == 1 {
			found = true
		}
	}
	assert.True(t, found)
}

// The chart's footer states each stack's promises with the figures of the
// table and of -json's fleet object.
func TestSVGFooterGivesTheFleetFigures(t *testing.T) {
	rep, in := fixture(t)
	in.loads[stackNaive].addWrite(&write{id: "n1", session: 0, acked: true, last: 201})
	execute(t, in.ds[stackNaive], "n1")
	execute(t, in.ds[stackNaive], "n1")
	rep.Replaced[0] = replacedReport{Replica: "r3", FirstStatus: 200}
	rep.build(in)
	rep.Fleet.Holdfast.RecoverySeconds, rep.Fleet.Holdfast.OverridePropagationSeconds = 1.7, 0.3
	svg := string(rep.svg())
	assert.Contains(t, svg, "holdfast: 0 lost, 0 duplicated, 0 hard 401 in grace, reads 2xx in IdP outage 0.0%, replaced replica verified yes, recovery 1.7 s, override 0.3 s")
	assert.Contains(t, svg, "naive: 0 lost, 1 duplicated, 0 hard 401 in grace")
	assert.Contains(t, svg, "replaced replica verified no, recovery never, override no switch")
	var table bytes.Buffer
	rep.judge(nil)
	rep.print(&table)
	assert.Contains(t, table.String(), "recovery: downstream back -> all normal, queue empty       1.7 s")
}

func TestWriteSettled(t *testing.T) {
	for _, tt := range []struct {
		last int
		want bool
	}{{0, false}, {201, true}, {202, false}, {409, false}, {429, false}, {401, true}, {422, true}, {502, false}, {503, false}} {
		assert.Equal(t, tt.want, (&write{last: tt.last}).settled(), "%d", tt.last)
	}
}

// The revoked subject is judged per replica: a replica that knew of the
// revocation must refuse it, and every replica must know within
// targetRevocationSpread of the first; acceptances by a replica that did
// not know yet are reported, not failed.
func TestRevokedJudgedByWhatEachReplicaKnew(t *testing.T) {
	rep, in := fixture(t)
	t1, t2 := in.start.Add(41*time.Second), in.start.Add(42*time.Second)
	in.rec.revokedKnown = t1
	in.rec.knownBy = map[string]time.Time{"r1": t1, "r2": t2}
	in.loads[stackHoldfast].results = []result{
		{at: 41500 * time.Millisecond, status: 200, session: 9, replica: "r2", degraded: "expired-grace"}, // r2 did not know yet
		{at: 41600 * time.Millisecond, status: 401, session: 9, replica: "r1"},
		{at: 42500 * time.Millisecond, status: 401, session: 9, replica: "r2"},
	}
	rep.build(in)
	rep.judge(nil)
	rr := rep.Revoked
	assert.Equal(t, 41.0, rr.KnownAtS)
	assert.Equal(t, 42.0, rr.AllKnewAtS)
	hs := rr.Stacks["holdfast"]
	assert.Equal(t, 1, hs.AcceptedAfterKnown)
	assert.Equal(t, 0, hs.AcceptedByKnowing)
	assert.Equal(t, map[string]int{"r2 IdP token (expired-grace)": 1}, hs.AcceptedAfterKnownBy)
	assert.True(t, checkNamed(rep, "revoked").Pass)

	// r2 accepts after it knew: fails.
	rep, _ = fixture(t)
	in.loads[stackHoldfast].results = append(in.loads[stackHoldfast].results,
		result{at: 43 * time.Second, status: 200, session: 9, replica: "r2"})
	rep.build(in)
	rep.judge(nil)
	assert.Equal(t, 1, rep.Revoked.Stacks["holdfast"].AcceptedByKnowing)
	assert.False(t, checkNamed(rep, "revoked").Pass)

	// r2 never learns: fails.
	rep, _ = fixture(t)
	in.loads[stackHoldfast].results = in.loads[stackHoldfast].results[:3]
	in.rec.knownBy = map[string]time.Time{"r1": t1}
	rep.build(in)
	rep.judge(nil)
	assert.Equal(t, -1.0, rep.Revoked.AllKnewAtS)
	assert.False(t, checkNamed(rep, "revoked").Pass)

	// r2 learns too late: fails.
	rep, _ = fixture(t)
	in.rec.knownBy = map[string]time.Time{"r1": t1, "r2": t1.Add(targetRevocationSpread + time.Second)}
	rep.build(in)
	rep.judge(nil)
	assert.False(t, checkNamed(rep, "revoked").Pass)
}

func checkNamed(rep *report, name string) check {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	return check{}
}
