package breaker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

func serve(h http.Handler, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestHandlerOpensAndAnswers503(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var status atomic.Int32
		status.Store(500)
		var calls atomic.Int32
		b := New(Config{MinCallers: 1, DisableJitter: true})
		h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.WriteHeader(int(status.Load()))
		}))
		for range 5 {
			assert.Equal(t, 500, serve(h, http.MethodGet, "/").Code)
		}
		require.Equal(t, Open, b.State("GET *"), "without a pattern every request shares one key")

		time.Sleep(5 * time.Second)
		rec := serve(h, http.MethodGet, "/")
		assert.EqualValues(t, 5, calls.Load(), "an open breaker does not call the handler")
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.Equal(t, "25", rec.Header().Get("Retry-After"))
		assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
		assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
		var p map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
		assert.Equal(t, "https://holdfast-go.github.io/problems/circuit-open", p["type"])
		assert.EqualValues(t, 503, p["status"])

		time.Sleep(25 * time.Second)
		status.Store(200)
		for range 3 {
			assert.Equal(t, 200, serve(h, http.MethodGet, "/").Code)
		}
		assert.Equal(t, Closed, b.State("GET *"))
	})
}

func TestHandlerClassification(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    State
	}{
		{"nothing written is 200", func(http.ResponseWriter, *http.Request) {}, Closed},
		{"body only is 200", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("x")) }, Closed},
		{"404", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }, Closed},
		{"501", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(501) }, Closed},
		{"503", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, Open},
		{"100 then 500", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(100); w.WriteHeader(500) }, Open},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(Config{MinCallers: 1, FailureThreshold: 1})
			serve(b.Handler(tt.handler), http.MethodGet, "/")
			assert.Equal(t, tt.want, b.State("GET *"))
		})
	}
}

func TestHandlerPanicCountsAndRepanics(t *testing.T) {
	b := New(Config{MinCallers: 1, FailureThreshold: 1})
	boom := errors.New("boom")
	h := b.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(boom) }))
	assert.PanicsWithValue(t, boom, func() { serve(h, http.MethodGet, "/") })
	assert.Equal(t, Open, b.State("GET *"))
}

func TestHandlerTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{MinCallers: 1, FailureThreshold: 1, Timeout: time.Second})
		h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			dl, ok := r.Context().Deadline()
			assert.True(t, ok)
			assert.Equal(t, time.Second, time.Until(dl))
			time.Sleep(2 * time.Second) // ignores its context, but is late
			w.WriteHeader(200)
		}))
		serve(h, http.MethodGet, "/")
		assert.Equal(t, Open, b.State("GET *"), "a handler that outlasts Timeout fails")
	})
}

func TestHandlerClientGoneNotCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{MinCallers: 1, FailureThreshold: 1})
		h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
			w.WriteHeader(503)
		}))
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		ctx, cancel := context.WithCancel(req.Context())
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		h.ServeHTTP(httptest.NewRecorder(), req.WithContext(ctx))
		assert.Equal(t, Closed, b.State("GET *"))
	})
}

func TestHandlerKeysByPattern(t *testing.T) {
	b := New(Config{MinCallers: 1, FailureThreshold: 1})
	mux := http.NewServeMux()
	mux.Handle("GET /fail", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })))
	mux.Handle("GET /ok/{id}", b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	serve(mux, http.MethodGet, "/fail")
	serve(mux, http.MethodGet, "/ok/1")
	assert.Equal(t, Open, b.State("GET /fail"))
	assert.Equal(t, Closed, b.State("GET /ok/{id}"))
	assert.Equal(t, 503, serve(mux, http.MethodGet, "/fail").Code)
	assert.Equal(t, 200, serve(mux, http.MethodGet, "/ok/2").Code)
}

func TestHandlerFallbacks(t *testing.T) {
	open := func(cfg Config) http.Handler {
		cfg.FailureThreshold = 1
		cfg.MinCallers = 1
		b := New(cfg)
		h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }))
		serve(h, http.MethodGet, "/")
		require.Equal(t, Open, b.State("GET *"))
		return h
	}
	cached := func(r *http.Request) (*http.Response, bool) {
		if r.URL.Path != "/cached" {
			return nil, false
		}
		return &http.Response{StatusCode: 200, Header: http.Header{
			"Age": {"120"}, "Content-Type": {"text/plain"}, "Connection": {"close"}, "Transfer-Encoding": {"chunked"},
		}, Body: io.NopCloser(strings.NewReader("old"))}, true
	}
	doc := &Document{Status: 200, ContentType: "application/json", Body: []byte(`{"items":[]}`)}
	h := open(Config{Cached: cached, Fallback: doc})

	rec := serve(h, http.MethodGet, "/cached")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, "old", rec.Body.String())
	assert.Equal(t, "120", rec.Header().Get("Age"))
	assert.Equal(t, "circuit-open", rec.Header().Get(httpx.HeaderDegraded))
	assert.Empty(t, rec.Header().Get("Connection"), "hop-by-hop headers are not copied")
	assert.Empty(t, rec.Header().Get("Transfer-Encoding"))

	rec = serve(h, http.MethodGet, "/other")
	assert.Equal(t, 200, rec.Code)
	assert.Equal(t, `{"items":[]}`, rec.Body.String())
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	assert.Equal(t, "circuit-open", rec.Header().Get(httpx.HeaderDegraded))

	assert.Equal(t, 500, serve(h, http.MethodPost, "/cached").Code, "POST has a breaker of its own")
	rec = serve(h, http.MethodPost, "/cached")
	assert.Equal(t, 503, rec.Code, "a write never gets a fallback that looks like success")
	assert.NotEmpty(t, rec.Header().Get("Retry-After"))
}

func TestHandlerKeepsFlusherAndHijacker(t *testing.T) {
	b := New(Config{MinCallers: 1})
	var flushErr error
	var sawHijacker bool
	h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sawHijacker = w.(http.Hijacker)
		flushErr = http.NewResponseController(w).Flush()
	}))
	rec := serve(h, http.MethodGet, "/")
	assert.NoError(t, flushErr)
	assert.True(t, rec.Flushed)
	assert.True(t, sawHijacker)
}

// hijackRecorder is a ResponseRecorder that can be hijacked.
type hijackRecorder struct {
	*httptest.ResponseRecorder
}

func (h hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, _ := net.Pipe()
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

func TestHandlerUpgradeAndHijack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{MinCallers: 1, FailureThreshold: 1, Timeout: time.Second})
		var hadDeadline bool
		h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, hadDeadline = r.Context().Deadline()
			c, _, err := http.NewResponseController(w).Hijack()
			require.NoError(t, err)
			defer c.Close()
			time.Sleep(5 * time.Second) // a long WebSocket session
			assert.NoError(t, r.Context().Err(), "the session outlives Timeout")
		}))
		req := httptest.NewRequest(http.MethodGet, "/ws", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		h.ServeHTTP(hijackRecorder{httptest.NewRecorder()}, req)
		assert.False(t, hadDeadline, "an Upgrade request's context has no deadline")
		assert.Equal(t, Closed, b.State("GET *"), "a hijacked connection is a success")
	})
}

func TestCachedSetCookieStripped(t *testing.T) {
	cached := func(*http.Request) (*http.Response, bool) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Set-Cookie": {"session=victim"}, "X-A": {"1"}},
			Body: io.NopCloser(strings.NewReader("x"))}, true
	}
	b := New(Config{MinCallers: 1, FailureThreshold: 1, Cached: cached})
	h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }))
	serve(h, http.MethodGet, "/")
	rec := serve(h, http.MethodGet, "/")
	assert.Equal(t, "1", rec.Header().Get("X-A"), "served from the cache")
	assert.Empty(t, rec.Header().Values("Set-Cookie"))

	bc := New(Config{MinCallers: 1, FailureThreshold: 1, Cached: cached})
	rt := bc.Transport(newUpstream(500))
	_, _ = call(t, rt, "http://a/")
	resp, err := call(t, rt, "http://a/")
	require.NoError(t, err)
	assert.Equal(t, "1", resp.Header.Get("X-A"))
	assert.Empty(t, resp.Header.Values("Set-Cookie"))
}

func TestHandlerWriterUnwraps(t *testing.T) {
	// SetWriteDeadline is reached only through Unwrap: the wrapped writer
	// has no such method.
	b := New(Config{MinCallers: 1})
	errc := make(chan error, 1)
	srv := httptest.NewServer(b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errc <- http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute))
	})))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	httpx.DrainClose(resp.Body)
	assert.NoError(t, <-errc, "http.ResponseController reaches the server's writer")
}

func TestHandlerUpgradeHeaderDoesNotLiftTimeout(t *testing.T) {
	// Anyone can send an Upgrade header on any route; without a hijack the
	// call is bounded as usual.
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{MinCallers: 1, FailureThreshold: 1, Timeout: time.Second})
		var cause error
		h := b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				cause = context.Cause(r.Context())
			case <-time.After(time.Minute): // a dependency that hangs
			}
			w.WriteHeader(http.StatusOK)
		}))
		req := httptest.NewRequest(http.MethodGet, "/report", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		start := time.Now()
		h.ServeHTTP(httptest.NewRecorder(), req)
		assert.Equal(t, time.Second, time.Since(start), "cancelled at Timeout")
		assert.ErrorIs(t, cause, ErrTimeout)
		assert.Equal(t, Open, b.State("GET *"), "a call that outlasts Timeout fails")
	})
}
