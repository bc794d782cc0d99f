package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/examples/internal/downstream"
)

// post sends a ledger write to d directly, as a service would.
func post(t *testing.T, d *downstream.Server, id string) {
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

func TestReportCountsDuplicatesLostWritesAndReads(t *testing.T) {
	var ds [2]*downstream.Server
	var loads [2]*load
	for i := range ds {
		ds[i] = downstream.New()
		loads[i] = &load{stack: i, writes: map[string]*write{}}
	}
	hf, nv := loads[stackHoldfast], loads[stackNaive]
	// holdfast: one write acknowledged and executed once, one queued and
	// never executed (lost).
	hf.writes["a"] = &write{id: "a", phase: 1, acked: true}
	hf.writes["b"] = &write{id: "b", phase: 2, acked: true, queued: true}
	post(t, ds[stackHoldfast], "a")
	// naive: one write executed three times.
	nv.writes["c"] = &write{id: "c", phase: 0, acked: true}
	for range 3 {
		post(t, ds[stackNaive], "c")
	}
	hf.results = []result{
		{phase: 1, op: opRead, status: 200, degraded: "jwks-unreachable", latency: time.Millisecond},
		{phase: 1, op: opRead, status: 200, latency: 3 * time.Millisecond},
		{phase: 2, op: opWrite, status: 202, degraded: "degraded"},
		{phase: 2, op: opRead, status: 502},
	}
	nv.results = []result{{phase: 1, op: opRead, status: 401}, {phase: 1, op: opRead, status: 200}}
	hits := [2][]int64{{0, 1, 3, 13, 14, 14}, {0, 2, 4, 10, 12, 12}}
	bounds := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}

	rep := &report{}
	rep.build(loads, ds, hits, bounds, newRecorder())

	idp := rep.Phases[1].Stacks["holdfast"]
	assert.Equal(t, 2, idp.Reads)
	assert.Equal(t, 100.0, idp.ReadsServedPct)
	assert.Equal(t, 1, idp.Degraded)
	assert.Equal(t, map[string]int{"jwks-unreachable": 1}, idp.DegradedBy)
	assert.Equal(t, 1.0, idp.AttemptsPerRequest, "2 downstream hits for 2 requests")
	assert.Equal(t, 3.0, idp.P99MS)

	down := rep.Phases[2].Stacks["holdfast"]
	assert.Equal(t, 1, down.Queued)
	assert.Equal(t, 1, down.Refused)
	assert.Equal(t, map[string]int{"502": 1}, down.RefusedBy)
	assert.Equal(t, 1, down.Lost)
	assert.Equal(t, 5.0, down.AttemptsPerRequest)
	assert.Equal(t, 2, rep.Totals["naive"].Duplicates)
	assert.Equal(t, 50.0, rep.Phases[1].Stacks["naive"].ReadsServedPct)

	assert.True(t, rep.failed(false), "a lost write fails the drill even without -check")
	hf.writes["b"].acked = false
	rep = &report{}
	rep.build(loads, ds, hits, bounds, newRecorder())
	assert.False(t, rep.failed(false))
	assert.True(t, rep.failed(true), "with -check, 5 upstream attempts per request in the downstream outage fail")
}

func TestSVGIsWellFormed(t *testing.T) {
	rep := &report{
		Phases:   []phaseReport{{Name: "a<b", FromS: 0, ToS: 5}, {Name: "c", FromS: 5, ToS: 10}},
		Timeline: []timelinePoint{{AtS: 0, Rate: [2]float64{1, 1}}, {AtS: 5, Rate: [2]float64{1, -1}}, {AtS: 9, Rate: [2]float64{0.5, 0}}},
	}
	dec := xml.NewDecoder(bytes.NewReader(rep.svg()))
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	assert.Equal(t, 2, lines, "one line per stack")
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	assert.Equal(t, time.Duration(5), percentile(d, 0.5))
	assert.Equal(t, time.Duration(10), percentile(d, 0.99))
	assert.Equal(t, time.Duration(0), percentile(nil, 0.5))
}
