package breaker

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func getURL(t *testing.T, c *http.Client, url string, hdr ...string) (int, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Issue 14 point 2: a provider that throttles (429) opens the client and
// the server breaker.
func TestTooManyRequestsOpensBreakers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer up.Close()
	cb := New(Config{FailureThreshold: 3})
	client := &http.Client{Transport: cb.Transport(up.Client().Transport)}
	for range 3 {
		code, err := getURL(t, client, up.URL)
		require.NoError(t, err)
		require.Equal(t, 429, code)
	}
	_, err := getURL(t, client, up.URL)
	assert.ErrorIs(t, err, ErrOpen, "three 429s open the client breaker")

	sb := New(Config{FailureThreshold: 3, MinCallers: 1})
	srv := httptest.NewServer(sb.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	})))
	defer srv.Close()
	for range 3 {
		getURL(t, srv.Client(), srv.URL)
	}
	code, err := getURL(t, srv.Client(), srv.URL)
	require.NoError(t, err)
	assert.Equal(t, 503, code, "three 429s open the route")

	// Configurable: an IsFailure that does not count 429.
	nb := New(Config{FailureThreshold: 3, IsFailure: func(status int, err error) bool {
		return status != 429 && DefaultIsFailure(status, err)
	}})
	client = &http.Client{Transport: nb.Transport(up.Client().Transport)}
	for range 5 {
		code, err := getURL(t, client, up.URL)
		require.NoError(t, err)
		require.Equal(t, 429, code)
	}
	assert.Equal(t, Closed, nb.State(strings.TrimPrefix(up.URL, "http://")))
}

// Issue 14 point 2: the breaker opens on the share of slow calls, like
// resilience4j's slow-call rate, on both sides.
func TestSlowCallRateOpens(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(60 * time.Millisecond)
	}))
	defer up.Close()
	var calls []CallEvent
	var mu sync.Mutex
	b := New(Config{SlowCallDuration: 20 * time.Millisecond, SlowCallRate: 0.5, MinRequests: 4,
		OnCall: func(ev CallEvent) { mu.Lock(); calls = append(calls, ev); mu.Unlock() }})
	client := &http.Client{Transport: b.Transport(up.Client().Transport)}
	for range 4 {
		code, err := getURL(t, client, up.URL)
		require.NoError(t, err)
		require.Equal(t, 200, code, "a slow call is still answered")
	}
	_, err := getURL(t, client, up.URL)
	assert.ErrorIs(t, err, ErrOpen, "4 slow calls of 4 open the breaker")
	mu.Lock()
	require.Len(t, calls, 5)
	assert.True(t, calls[0].Slow)
	assert.Equal(t, OutcomeSuccess, calls[0].Outcome)
	assert.GreaterOrEqual(t, calls[0].Latency, 60*time.Millisecond)
	assert.Equal(t, OutcomeRejected, calls[4].Outcome)
	assert.Equal(t, Open, calls[4].State)
	mu.Unlock()

	// Without SlowCallDuration, slow calls are fine.
	b = New(Config{MinRequests: 4})
	client = &http.Client{Transport: b.Transport(up.Client().Transport)}
	for range 5 {
		_, err := getURL(t, client, up.URL)
		require.NoError(t, err)
	}

	sb := New(Config{SlowCallDuration: 20 * time.Millisecond, MinRequests: 4, MinCallers: 1})
	srv := httptest.NewServer(sb.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(40 * time.Millisecond)
	})))
	defer srv.Close()
	for range 4 {
		getURL(t, srv.Client(), srv.URL)
	}
	code, err := getURL(t, srv.Client(), srv.URL)
	require.NoError(t, err)
	assert.Equal(t, 503, code, "a slow route opens")
}

// Issue 14 point 5: hosts chosen by an attacker that fail open breakers
// that fill the registry; a real host must still get a breaker of its own
// (before: it ran unprotected and uncounted).
func TestRegistryFullOfOpenBreakersStillProtectsRealHost(t *testing.T) {
	bad := make([]*httptest.Server, 6)
	for i := range bad {
		bad[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
		defer bad[i].Close()
	}
	var realCalls atomic.Int32
	var realDown atomic.Bool
	real := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		realCalls.Add(1)
		if realDown.Load() {
			w.WriteHeader(502)
		}
	}))
	defer real.Close()

	b := New(Config{MaxKeys: 4, FailureThreshold: 1})
	client := &http.Client{Transport: b.Transport(http.DefaultTransport)}
	for _, s := range bad {
		getURL(t, client, s.URL)
	}
	require.Len(t, b.Snapshot(), 4)
	for _, st := range b.Snapshot() {
		require.Equal(t, Open, st.State, "the registry is full of open breakers")
	}
	realDown.Store(true)
	code, err := getURL(t, client, real.URL)
	require.NoError(t, err)
	require.Equal(t, 502, code)
	realHost := strings.TrimPrefix(real.URL, "http://")
	assert.Equal(t, Open, b.State(realHost), "the real host has a breaker, and its failure opened it")
	_, err = getURL(t, client, real.URL)
	assert.ErrorIs(t, err, ErrOpen)
	assert.EqualValues(t, 1, realCalls.Load(), "the open breaker protects the real host")
	assert.LessOrEqual(t, len(b.Snapshot()), 4)
}

// Issue 14 point 5: one caller who makes a route fail cannot open it for
// everyone; failures of several distinct callers can.
func TestRouteBreakerNeedsSeveralCallers(t *testing.T) {
	b := New(Config{DisableJitter: true})
	var calls atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("GET /orders", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Query().Get("crash") != "" {
			http.Error(w, "crashed", http.StatusInternalServerError)
		}
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for range 20 {
		code, err := getURL(t, srv.Client(), srv.URL+"/orders?crash=1", "Authorization", "Bearer mallory")
		require.NoError(t, err)
		require.Equal(t, 500, code)
	}
	assert.Equal(t, Closed, b.State("GET /orders"), "20 failures of one caller do not open the route")
	code, err := getURL(t, srv.Client(), srv.URL+"/orders", "Authorization", "Bearer alice")
	require.NoError(t, err)
	assert.Equal(t, 200, code, "another caller is still served")

	calls.Store(0)
	for _, who := range []string{"bob", "carol", "dave", "erin", "frank", "grace", "heidi"} {
		getURL(t, srv.Client(), srv.URL+"/orders?crash=1", "Authorization", "Bearer "+who)
	}
	assert.Equal(t, Open, b.State("GET /orders"), "failures of several callers open it")
	code, err = getURL(t, srv.Client(), srv.URL+"/orders", "Authorization", "Bearer alice")
	require.NoError(t, err)
	assert.Equal(t, 503, code)
}

// Issue 14 point 5: a router that sets r.Pattern without the method (chi,
// or a ServeMux pattern without one) must not merge GET and POST.
func TestDefaultRouteKeyHasMethod(t *testing.T) {
	b := New(Config{FailureThreshold: 1, MinCallers: 1})
	mux := http.NewServeMux()
	mux.Handle("/orders", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(500)
		}
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	getURL(t, srv.Client(), srv.URL+"/orders")
	assert.Equal(t, Open, b.State("GET /orders"))
	resp, err := srv.Client().Post(srv.URL+"/orders", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, "POST /orders has a breaker of its own")
	assert.Equal(t, Closed, b.State("POST /orders"))

	// chi sets r.Pattern = "/orders" on the request before the handler.
	chiLike := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { r.Pattern = "/items/{id}"; next.ServeHTTP(w, r) })
	}
	b2 := New(Config{FailureThreshold: 1, MinCallers: 1})
	h := chiLike(b2.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })))
	srv2 := httptest.NewServer(h)
	defer srv2.Close()
	req, _ := http.NewRequest(http.MethodDelete, srv2.URL+"/items/1", nil)
	resp, err = srv2.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, Open, b2.State("DELETE /items/{id}"))
	assert.Equal(t, Closed, b2.State("GET /items/{id}"))
}

// Issue 14 point 5: Status and State read as text and seconds in JSON.
func TestStatusJSON(t *testing.T) {
	b := New(Config{FailureThreshold: 1, Delay: 30 * time.Second, DisableJitter: true})
	_, _ = call(t, b.Transport(newUpstream(500)), "http://a/")
	out, err := json.Marshal(b.Snapshot())
	require.NoError(t, err)
	var got []map[string]any
	require.NoError(t, json.Unmarshal(out, &got))
	require.Len(t, got, 1)
	assert.Equal(t, "a", got[0]["key"])
	assert.Equal(t, "open", got[0]["state"])
	assert.InDelta(t, 30, got[0]["retry_after_seconds"], 1)
	assert.EqualValues(t, 1, got[0]["failures"])
	var back []Status
	require.NoError(t, json.Unmarshal(out, &back))
	assert.Equal(t, Open, back[0].State)
	assert.InDelta(t, float64(30*time.Second), float64(back[0].RetryAfter), float64(time.Second))
	var s State
	assert.Error(t, s.UnmarshalText([]byte("ajar")))
}

// MaxConcurrent bounds the calls of one host in flight (client side) and
// of one route (server side); refusals are not failures.
func TestMaxConcurrent(t *testing.T) {
	release := make(chan struct{})
	var inside sync.WaitGroup
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			inside.Done()
			<-release
		}
	}))
	defer up.Close()
	b := New(Config{MaxConcurrent: 2, Timeout: -1})
	client := &http.Client{Transport: b.Transport(up.Client().Transport)}
	inside.Add(2)
	var done sync.WaitGroup
	for range 2 {
		done.Add(1)
		go func() { defer done.Done(); _, _ = getURL(t, client, up.URL+"/slow") }()
	}
	inside.Wait()
	_, err := getURL(t, client, up.URL+"/")
	var le *LimitError
	require.ErrorAs(t, err, &le)
	assert.True(t, errors.Is(err, ErrConcurrencyLimit))
	close(release)
	done.Wait()
	code, err := getURL(t, client, up.URL+"/")
	require.NoError(t, err)
	assert.Equal(t, 200, code)
	assert.Equal(t, Closed, b.State(strings.TrimPrefix(up.URL, "http://")))
}

func TestMaxConcurrentServer(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	var outcomes sync.Map
	b := New(Config{MaxConcurrent: 1, Timeout: -1, OnCall: func(ev CallEvent) { outcomes.Store(ev.Outcome, ev) }})
	srv := httptest.NewServer(b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})))
	defer srv.Close()
	done := make(chan struct{})
	go func() { defer close(done); _, _ = getURL(t, srv.Client(), srv.URL) }()
	<-entered
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Contains(t, string(body), ProblemConcurrencyLimit)
	close(release)
	<-done
	ev, ok := outcomes.Load(OutcomeLimited)
	require.True(t, ok)
	assert.Equal(t, SideServer, ev.(CallEvent).Side)
	_, ok = outcomes.Load(OutcomeSuccess)
	assert.True(t, ok)
	assert.Equal(t, Closed, b.State("GET *"), "a refusal is not a failure")
}
