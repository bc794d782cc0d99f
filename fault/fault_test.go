package fault_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/fault"
)

// dependency is a real HTTP server that counts the requests that reached
// its handler (a write's side effect).
type dependency struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newDependency(t *testing.T, wrap func(http.Handler) http.Handler) *dependency {
	t.Helper()
	d := &dependency{}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok")
	})
	if wrap != nil {
		h = wrap(h)
	}
	d.srv = httptest.NewServer(h)
	t.Cleanup(d.srv.Close)
	return d
}

func do(t *testing.T, c *http.Client, method, url string, timeout time.Duration) (*http.Response, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader("body"))
	require.NoError(t, err)
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func freshClient(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: rt}
}

func noKeepAlive() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	return tr
}

func TestInertUnlessConfigured(t *testing.T) {
	in := fault.New(fault.Config{})
	d := newDependency(t, in.Middleware("dep"))
	c := freshClient(in.Transport("dep", nil))
	resp, body, err := do(t, c, http.MethodPost, d.srv.URL, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok", body)
	assert.EqualValues(t, 1, d.hits.Load())
	// A fault for another dependency changes nothing here.
	require.NoError(t, in.Set("other", fault.Fault{Kind: fault.Outage}))
	resp, _, err = do(t, c, http.MethodPost, d.srv.URL, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.EqualValues(t, 2, d.hits.Load())
}

func TestClientSideKinds(t *testing.T) {
	tests := []struct {
		name  string
		f     fault.Fault
		check func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64)
	}{
		{"latency", fault.Fault{Kind: fault.Latency, Latency: 150 * time.Millisecond},
			func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64) {
				require.NoError(t, err)
				assert.Equal(t, http.StatusOK, resp.StatusCode)
				assert.GreaterOrEqual(t, took, 150*time.Millisecond)
				assert.EqualValues(t, 1, hits)
			}},
		{"status", fault.Fault{Kind: fault.Status, Status: 502, RetryAfter: 2 * time.Second},
			func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64) {
				require.NoError(t, err)
				assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
				assert.Equal(t, "2", resp.Header.Get("Retry-After"))
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
				assert.EqualValues(t, 0, hits)
			}},
		{"error", fault.Fault{Kind: fault.Error},
			func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.ErrorIs(t, err, fault.ErrInjected)
				assert.ErrorIs(t, err, syscall.ECONNRESET)
				assert.EqualValues(t, 0, hits)
			}},
		{"outage", fault.Fault{Kind: fault.Outage},
			func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.ErrorIs(t, err, fault.ErrInjected)
				assert.ErrorIs(t, err, syscall.ECONNREFUSED)
				assert.EqualValues(t, 0, hits)
			}},
		{"hang until the caller gives up", fault.Fault{Kind: fault.Hang},
			func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.GreaterOrEqual(t, took, 300*time.Millisecond)
				assert.EqualValues(t, 1, hits, "the request ran: its side effect happened")
			}},
		{"hang bounded by MaxHang", fault.Fault{Kind: fault.Hang, MaxHang: 100 * time.Millisecond},
			func(t *testing.T, resp *http.Response, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.ErrorIs(t, err, fault.ErrInjected)
				assert.Less(t, took, 300*time.Millisecond)
				assert.EqualValues(t, 1, hits)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fault.New(fault.Config{})
			d := newDependency(t, nil)
			require.NoError(t, in.Set("dep", tt.f))
			c := freshClient(in.Transport("dep", nil))
			start := time.Now()
			resp, _, err := do(t, c, http.MethodPost, d.srv.URL, 300*time.Millisecond+tt.f.Latency)
			tt.check(t, resp, err, time.Since(start), d.hits.Load())
		})
	}
}

func TestServerSideKinds(t *testing.T) {
	tests := []struct {
		name  string
		f     fault.Fault
		check func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64)
	}{
		{"latency", fault.Fault{Kind: fault.Latency, Latency: 150 * time.Millisecond},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.NoError(t, err)
				assert.Equal(t, "ok", body)
				assert.GreaterOrEqual(t, took, 150*time.Millisecond)
				assert.EqualValues(t, 1, hits)
			}},
		{"status", fault.Fault{Kind: fault.Status, Status: 429, RetryAfter: time.Second},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.NoError(t, err)
				assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
				assert.Contains(t, body, "injected-fault")
				assert.EqualValues(t, 0, hits)
			}},
		{"status defaults to 503", fault.Fault{Kind: fault.Status},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.NoError(t, err)
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				assert.EqualValues(t, 0, hits)
			}},
		{"error", fault.Fault{Kind: fault.Error},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.NotErrorIs(t, err, context.DeadlineExceeded)
				assert.EqualValues(t, 0, hits)
			}},
		{"outage", fault.Fault{Kind: fault.Outage},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.NotErrorIs(t, err, context.DeadlineExceeded)
				assert.EqualValues(t, 0, hits)
			}},
		{"hang", fault.Fault{Kind: fault.Hang},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.Error(t, err)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.EqualValues(t, 1, hits, "the request ran: its side effect happened")
			}},
		{"hang bounded by MaxHang", fault.Fault{Kind: fault.Hang, MaxHang: 100 * time.Millisecond},
			func(t *testing.T, resp *http.Response, body string, err error, took time.Duration, hits int64) {
				require.Error(t, err, "no answer, even after MaxHang")
				assert.NotErrorIs(t, err, context.DeadlineExceeded)
				assert.Less(t, took, 300*time.Millisecond)
				assert.EqualValues(t, 1, hits)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fault.New(fault.Config{})
			d := newDependency(t, in.Middleware("dep"))
			require.NoError(t, in.Set("dep", tt.f))
			c := freshClient(noKeepAlive()) // POST is not retried by net/http on a broken connection
			start := time.Now()
			resp, body, err := do(t, c, http.MethodPost, d.srv.URL, 400*time.Millisecond+tt.f.Latency)
			tt.check(t, resp, body, err, time.Since(start), d.hits.Load())
		})
	}
}

func TestRateAndMethods(t *testing.T) {
	var mu sync.Mutex
	n := 0
	// Alternate 0.25 and 0.75: a rate of 0.5 applies to every other request.
	in := fault.New(fault.Config{Rand: func() float64 {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n%2 == 1 {
			return 0.25
		}
		return 0.75
	}})
	d := newDependency(t, nil)
	c := freshClient(in.Transport("dep", nil))
	require.NoError(t, in.Set("dep", fault.Fault{Kind: fault.Status, Status: 503, Rate: 0.5, Methods: []string{"POST"}}))
	var failed int
	for range 10 {
		resp, _, err := do(t, c, http.MethodPost, d.srv.URL, time.Second)
		require.NoError(t, err)
		if resp.StatusCode == http.StatusServiceUnavailable {
			failed++
		}
	}
	assert.Equal(t, 5, failed)
	assert.EqualValues(t, 5, d.hits.Load())
	// GET is not in Methods: untouched, and Rand is not consulted.
	for range 4 {
		resp, _, err := do(t, c, http.MethodGet, d.srv.URL, time.Second)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}
	assert.Equal(t, 10, n)
}

func TestSwitchAtRunTimeAndHooks(t *testing.T) {
	var events []fault.Event
	var changes []string
	var mu sync.Mutex
	in := fault.New(fault.Config{
		OnInject: func(ev fault.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() },
		OnChange: func(ev fault.ChangeEvent) {
			mu.Lock()
			defer mu.Unlock()
			if ev.Set {
				changes = append(changes, ev.Dependency+" "+ev.Fault.String())
			} else {
				changes = append(changes, ev.Dependency+" cleared")
			}
		},
	})
	d := newDependency(t, in.Middleware("idp"))
	c := freshClient(noKeepAlive())
	require.NoError(t, in.Set("idp", fault.Fault{Kind: fault.Outage}))
	_, _, err := do(t, c, http.MethodGet, d.srv.URL, time.Second)
	require.Error(t, err)
	in.Clear("idp")
	resp, _, err := do(t, c, http.MethodGet, d.srv.URL, time.Second)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, events, 1)
	assert.Equal(t, fault.Event{Dependency: "idp", Kind: fault.Outage, Side: fault.SideServer, Method: "GET", Path: "/"}, events[0])
	assert.Equal(t, []string{"idp outage", "idp cleared"}, changes)
}

func TestSetRefusesInvalid(t *testing.T) {
	in := fault.New(fault.Config{})
	for _, tt := range []struct {
		dep string
		f   fault.Fault
	}{
		{"", fault.Fault{Kind: fault.Outage}},
		{"a b", fault.Fault{Kind: fault.Outage}},
		{strings.Repeat("a", 65), fault.Fault{Kind: fault.Outage}},
		{"dep", fault.Fault{}},
		{"dep", fault.Fault{Kind: "flood"}},
		{"dep", fault.Fault{Kind: fault.Status, Status: 700}},
		{"dep", fault.Fault{Kind: fault.Status, Rate: 1.5}},
		{"dep", fault.Fault{Kind: fault.Latency, Latency: -time.Second}},
		{"dep", fault.Fault{Kind: fault.Hang, MaxHang: 2 * fault.MaxDelay}},
		{"dep", fault.Fault{Kind: fault.Hang, Methods: []string{"PO ST"}}},
	} {
		assert.Error(t, in.Set(tt.dep, tt.f), "%q %+v", tt.dep, tt.f)
	}
	assert.Empty(t, in.Faults())
}

func TestHangDoesNotOutliveTheRoundTripContract(t *testing.T) {
	// A Hang on the client side returns once the request's context ends,
	// and the request's side effect happened exactly once.
	in := fault.New(fault.Config{})
	d := newDependency(t, nil)
	require.NoError(t, in.Set("dep", fault.Fault{Kind: fault.Hang}))
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.srv.URL, strings.NewReader("x"))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := in.Transport("dep", nil).RoundTrip(req)
		done <- err
	}()
	require.Eventually(t, func() bool { return d.hits.Load() == 1 }, 2*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		assert.True(t, errors.Is(err, context.Canceled), "%v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("RoundTrip did not return after its context ended")
	}
}
