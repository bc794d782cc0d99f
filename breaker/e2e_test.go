package breaker

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// countingServer is a real upstream whose status can be switched.
func countingServer(t *testing.T, status int) (*httptest.Server, *atomic.Int32, *atomic.Int32) {
	var hits, st atomic.Int32
	st.Store(int32(status))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(int(st.Load()))
		_, _ = io.WriteString(w, "hello")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits, &st
}

func TestEndToEndClient(t *testing.T) {
	// Long enough that the open-state checks, a few real requests on a
	// loaded machine, finish before the breaker half-opens (with 50 ms a
	// slow request let a trial through and the checks flaked).
	const delay = time.Second
	var ev events
	b := New(Config{MinCallers: 1, Delay: delay, DisableJitter: true, SuccessThreshold: 1, OnStateChange: ev.add})
	client := &http.Client{Transport: b.Transport(nil)}

	bad, badHits, badStatus := countingServer(t, http.StatusInternalServerError)
	good, goodHits, _ := countingServer(t, http.StatusOK)
	badKey := bad.Listener.Addr().String()
	goodKey := good.Listener.Addr().String()

	get := func(url string) (*http.Response, error) {
		resp, err := client.Get(url)
		if resp != nil {
			httpx.DrainClose(resp.Body)
		}
		return resp, err
	}
	for range 5 {
		resp, err := get(bad.URL)
		require.NoError(t, err)
		assert.Equal(t, 500, resp.StatusCode)
		resp, err = get(good.URL)
		require.NoError(t, err)
		assert.Equal(t, 200, resp.StatusCode)
	}
	require.Equal(t, Open, b.State(badKey), "the failing host opens")
	assert.Equal(t, Closed, b.State(goodKey), "the healthy host stays closed")

	for range 10 {
		_, err := get(bad.URL)
		require.ErrorIs(t, err, ErrOpen)
	}
	assert.EqualValues(t, 5, badHits.Load(), "open calls never reach the upstream")
	assert.EqualValues(t, 5, goodHits.Load())

	badStatus.Store(http.StatusOK)
	require.Eventually(t, func() bool {
		resp, err := get(bad.URL)
		return err == nil && resp.StatusCode == 200
	}, 10*time.Second, delay/10)
	assert.Equal(t, Closed, b.State(badKey), "recovery closes")
	assert.Equal(t, []StateChange{
		{Key: badKey, From: Closed, To: Open},
		{Key: badKey, From: Open, To: HalfOpen},
		{Key: badKey, From: HalfOpen, To: Closed},
	}, ev.list())
}

func TestEndToEndServer(t *testing.T) {
	// Long enough that the open-state checks, a few real requests on a
	// loaded machine, finish before the breaker half-opens (with 50 ms a
	// slow request let a trial through and the checks flaked).
	const delay = time.Second
	b := New(Config{MinCallers: 1, Delay: delay, DisableJitter: true, SuccessThreshold: 1})
	var failing atomic.Bool
	failing.Store(true)
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("GET /orders/{id}", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			http.Error(w, "db down", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "order "+r.PathValue("id"))
	})))
	mux.Handle("GET /health", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for i := range 5 {
		resp, err := http.Get(srv.URL + "/orders/" + strconv.Itoa(i))
		require.NoError(t, err)
		httpx.DrainClose(resp.Body)
		assert.Equal(t, 500, resp.StatusCode)
	}
	require.Equal(t, Open, b.State("GET /orders/{id}"))

	resp, err := http.Get(srv.URL + "/orders/9")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"), "remaining delay rounded up to whole seconds")
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	require.NoError(t, json.Unmarshal(body, &p))
	assert.Equal(t, 503, p.Status)
	assert.Contains(t, p.Type, "circuit-open")
	assert.EqualValues(t, 5, hits.Load(), "the open route's handler was not called")

	resp, err = http.Get(srv.URL + "/health")
	require.NoError(t, err)
	httpx.DrainClose(resp.Body)
	assert.Equal(t, 200, resp.StatusCode, "another route is unaffected")

	failing.Store(false)
	require.Eventually(t, func() bool {
		resp, err := http.Get(srv.URL + "/orders/1")
		if err != nil {
			return false
		}
		httpx.DrainClose(resp.Body)
		return resp.StatusCode == 200
	}, 10*time.Second, delay/10)
	assert.Equal(t, Closed, b.State("GET /orders/{id}"))
}

func TestEndToEndClientTimeoutAndBody(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	b := New(Config{MinCallers: 1, Timeout: 50 * time.Millisecond, FailureThreshold: 1})
	client := &http.Client{Transport: b.Transport(nil)}
	_, err := client.Get(slow.URL)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrTimeout)
	assert.Equal(t, Open, b.State(slow.Listener.Addr().String()))

	// A long body is readable well past RoundTrip as long as it ends before Timeout.
	streaming := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "chunk%d ", i)
			http.NewResponseController(w).Flush()
			time.Sleep(5 * time.Millisecond)
		}
	}))
	t.Cleanup(streaming.Close)
	b2 := New(Config{MinCallers: 1, Timeout: 2 * time.Second})
	resp, err := (&http.Client{Transport: b2.Transport(nil)}).Get(streaming.URL)
	require.NoError(t, err)
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, "chunk0 chunk1 chunk2 ", string(data))
}

func TestRaceManyKeys(t *testing.T) {
	var changes atomic.Int32
	b := New(Config{MinCallers: 1,
		MaxKeys: 64, FailureThreshold: 2, Delay: time.Millisecond, DisableJitter: true, SuccessThreshold: 1,
		OnStateChange: func(StateChange) { changes.Add(1) },
	})
	var n atomic.Int64
	rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
		if n.Add(1)%3 == 0 {
			return &http.Response{StatusCode: 503, Body: http.NoBody}, nil
		}
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}))
	h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			w.WriteHeader(500)
		}
	}))
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 300 {
				key := fmt.Sprintf("h%d", (g*7+i)%200)
				req, _ := http.NewRequest(http.MethodGet, "http://"+key+"/", nil)
				resp, err := rt.RoundTrip(req)
				if err == nil {
					_ = resp.Body.Close()
				}
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
				if i%50 == 0 {
					_ = b.Snapshot()
					_ = b.State(key)
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, len(b.Snapshot()), 64)
	assert.Positive(t, changes.Load(), "breakers changed state under load")
}
