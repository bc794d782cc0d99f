package breaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// upstream is a fake RoundTripper whose status can be switched; it counts
// the calls that reached it.
type upstream struct {
	status atomic.Int32
	calls  atomic.Int32
}

func newUpstream(status int) *upstream {
	u := &upstream{}
	u.status.Store(int32(status))
	return u
}

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	u.calls.Add(1)
	if req.Body != nil {
		_ = req.Body.Close()
	}
	s := int(u.status.Load())
	if s == 0 {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: s, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")), Request: req}, nil
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// events records state changes.
type events struct {
	mu  sync.Mutex
	cs  []StateChange
	seq uint64
}

// add records c without its Seq and At, after checking that Seq grows.
func (ev *events) add(c StateChange) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if c.Seq <= ev.seq || c.At.IsZero() {
		panic(fmt.Sprintf("StateChange.Seq %d after %d, At %v", c.Seq, ev.seq, c.At))
	}
	ev.seq = c.Seq
	c.Seq, c.At = 0, time.Time{}
	ev.cs = append(ev.cs, c)
}
func (ev *events) list() []StateChange {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]StateChange(nil), ev.cs...)
}

func call(t *testing.T, rt http.RoundTripper, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	if resp != nil {
		httpx.DrainClose(resp.Body)
	}
	return resp, err
}

func TestConsecutiveFailuresOpenHalfOpenClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ev events
		b := New(Config{DisableJitter: true, OnStateChange: ev.add})
		up := newUpstream(http.StatusBadGateway)
		rt := b.Transport(up)

		for i := range 4 {
			resp, err := call(t, rt, "http://a.example/")
			require.NoError(t, err, "call %d", i)
			assert.Equal(t, http.StatusBadGateway, resp.StatusCode, "a failing response is still returned")
		}
		assert.Equal(t, Closed, b.State("a.example"), "4 consecutive failures keep it closed")
		_, err := call(t, rt, "http://a.example/")
		require.NoError(t, err)
		require.Equal(t, Open, b.State("a.example"), "the 5th consecutive failure opens")

		_, err = call(t, rt, "http://a.example/")
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrOpen)
		assert.ErrorIs(t, err, httpx.ErrCircuitOpen)
		var oe *OpenError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, "a.example", oe.Key)
		assert.Equal(t, 30*time.Second, oe.RetryAfter)
		assert.EqualValues(t, 5, up.calls.Load(), "an open breaker does not call upstream")

		time.Sleep(10 * time.Second)
		_, err = call(t, rt, "http://a.example/")
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, 20*time.Second, oe.RetryAfter, "RetryAfter is the remaining delay")

		time.Sleep(20 * time.Second)
		up.status.Store(http.StatusOK)
		for range 2 {
			_, err = call(t, rt, "http://a.example/")
			require.NoError(t, err)
			assert.Equal(t, HalfOpen, b.State("a.example"), "closes only after SuccessThreshold trials")
		}
		_, err = call(t, rt, "http://a.example/")
		require.NoError(t, err)
		assert.Equal(t, Closed, b.State("a.example"))
		assert.Equal(t, []StateChange{
			{Key: "a.example", From: Closed, To: Open},
			{Key: "a.example", From: Open, To: HalfOpen},
			{Key: "a.example", From: HalfOpen, To: Closed},
		}, ev.list())

		// Consecutive count starts over after closing.
		up.status.Store(http.StatusInternalServerError)
		for range 4 {
			_, _ = call(t, rt, "http://a.example/")
		}
		assert.Equal(t, Closed, b.State("a.example"))
	})
}

func TestSuccessResetsConsecutiveCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		up := newUpstream(http.StatusInternalServerError)
		rt := b.Transport(up)
		for range 4 {
			_, _ = call(t, rt, "http://a/")
		}
		up.status.Store(http.StatusOK)
		_, _ = call(t, rt, "http://a/")
		up.status.Store(http.StatusInternalServerError)
		for range 4 {
			_, _ = call(t, rt, "http://a/")
		}
		assert.Equal(t, Closed, b.State("a"), "4 + success + 4 is not 5 consecutive (and 8/9 calls is below MinRequests)")
	})
}

func TestHalfOpenFailureReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ev events
		b := New(Config{DisableJitter: true, FailureThreshold: 1, Delay: time.Second, OnStateChange: ev.add})
		up := newUpstream(http.StatusServiceUnavailable)
		rt := b.Transport(up)
		_, _ = call(t, rt, "http://a/")
		require.Equal(t, Open, b.State("a"))
		time.Sleep(time.Second)
		_, err := call(t, rt, "http://a/")
		require.NoError(t, err, "the trial call goes through")
		assert.Equal(t, Open, b.State("a"), "a failed trial opens again")
		assert.EqualValues(t, 2, up.calls.Load())
		_, err = call(t, rt, "http://a/")
		assert.ErrorIs(t, err, ErrOpen)
		assert.Equal(t, []StateChange{
			{Key: "a", From: Closed, To: Open},
			{Key: "a", From: Open, To: HalfOpen},
			{Key: "a", From: HalfOpen, To: Open},
		}, ev.list())
	})
}

// pattern runs calls against a switchable upstream: 'f' fails, 's' succeeds.
func pattern(t *testing.T, rt http.RoundTripper, up *upstream, p string) {
	t.Helper()
	for _, c := range p {
		if c == 'f' {
			up.status.Store(http.StatusInternalServerError)
		} else {
			up.status.Store(http.StatusOK)
		}
		_, _ = call(t, rt, "http://a/")
	}
}

func TestFailureRate(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		want    State
	}{
		{"20 % of 20 opens", strings.Repeat("ssssf", 4), Open},
		{"15 % of 20 stays closed", "ssssf" + "ssssf" + "ssssf" + "sssss", Closed},
		{"50 % of 19 is below MinRequests", strings.Repeat("sf", 9) + "f", Closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := New(Config{})
				up := newUpstream(http.StatusOK)
				rt := b.Transport(up)
				pattern(t, rt, up, tt.pattern)
				assert.Equal(t, tt.want, b.State("a"))
			})
		})
	}
}

func TestWindowExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		up := newUpstream(http.StatusOK)
		rt := b.Transport(up)
		pattern(t, rt, up, "ffff")
		time.Sleep(61 * time.Second)
		pattern(t, rt, up, strings.Repeat("s", 16))
		assert.Equal(t, Closed, b.State("a"), "failures older than Window no longer count")
		pattern(t, rt, up, "ffff")
		assert.Equal(t, Open, b.State("a"), "4 of 20 in the window is 20 %")
	})
}

func TestJitterBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureThreshold: 1}) // default Delay 30 s, Jitter 0.2
		rt := b.Transport(newUpstream(http.StatusInternalServerError))
		seen := map[time.Duration]bool{}
		for i := range 50 {
			host := "h" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			_, _ = call(t, rt, "http://"+host+"/")
			_, err := call(t, rt, "http://"+host+"/")
			var oe *OpenError
			require.ErrorAs(t, err, &oe)
			assert.GreaterOrEqual(t, oe.RetryAfter, 24*time.Second)
			assert.LessOrEqual(t, oe.RetryAfter, 36*time.Second)
			seen[oe.RetryAfter] = true
		}
		assert.Greater(t, len(seen), 10, "delays vary")

		nb := New(Config{FailureThreshold: 1, DisableJitter: true})
		rt = nb.Transport(newUpstream(http.StatusInternalServerError))
		_, _ = call(t, rt, "http://a/")
		_, err := call(t, rt, "http://a/")
		var oe *OpenError
		require.ErrorAs(t, err, &oe)
		assert.Equal(t, 30*time.Second, oe.RetryAfter)
	})
}

func TestClassification(t *testing.T) {
	tests := []struct {
		status int
		fails  bool
	}{
		{200, false}, {204, false}, {304, false}, {400, false}, {401, false}, {404, false},
		{429, true}, {500, true}, {501, false}, {502, true}, {503, true}, {504, true},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			b := New(Config{FailureThreshold: 1})
			_, _ = call(t, b.Transport(newUpstream(tt.status)), "http://a/")
			assert.Equal(t, tt.fails, b.State("a") == Open)
		})
	}
	t.Run("transport error", func(t *testing.T) {
		b := New(Config{FailureThreshold: 1})
		_, err := call(t, b.Transport(newUpstream(0)), "http://a/")
		require.Error(t, err)
		assert.Equal(t, Open, b.State("a"))
	})
	t.Run("IsFailure override", func(t *testing.T) {
		b := New(Config{FailureThreshold: 1, IsFailure: func(status int, err error) bool { return status == 429 }})
		_, _ = call(t, b.Transport(newUpstream(500)), "http://a/")
		assert.Equal(t, Closed, b.State("a"))
		_, _ = call(t, b.Transport(newUpstream(429)), "http://a/")
		assert.Equal(t, Open, b.State("a"))
	})
}

func httptestRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	return req
}

func TestCallerCancellationNotCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureThreshold: 1, DisableJitter: true, Delay: time.Second})
		block := rtFunc(func(r *http.Request) (*http.Response, error) {
			<-r.Context().Done()
			return nil, r.Context().Err()
		})
		rt := b.Transport(block)
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://a/", nil)
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		_, err := rt.RoundTrip(req)
		require.ErrorIs(t, err, context.Canceled)
		assert.NotErrorIs(t, err, ErrTimeout)
		assert.Equal(t, Closed, b.State("a"), "a caller's cancellation is not a failure")

	})
}

// A caller deadline shorter than Timeout (retry's AttemptTimeout, an
// http.Client Timeout) that passes while the upstream hangs is the upstream
// being too slow: it must open the breaker, or a hanging host never would.
func TestCallerDeadlineCountsAsTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureThreshold: 2, DisableJitter: true, Delay: time.Second})
		var calls atomic.Int32
		rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			<-r.Context().Done()
			return nil, r.Context().Err()
		}))
		for range 2 {
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://a/", nil)
			_, err := rt.RoundTrip(req)
			cancel()
			require.ErrorIs(t, err, context.DeadlineExceeded)
		}
		assert.Equal(t, Open, b.State("a"), "two hung calls past the caller's deadline open the breaker")
		_, err := rt.RoundTrip(httptestRequest(t, "http://a/"))
		assert.ErrorIs(t, err, ErrOpen)
		assert.Equal(t, int32(2), calls.Load(), "an open breaker does not call the upstream")
	})
}

func TestAbandonedTrialReleasesHalfOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureThreshold: 1, DisableJitter: true, Delay: time.Second, SuccessThreshold: 1})
		var fail atomic.Bool
		fail.Store(true)
		rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
			if fail.Load() {
				return &http.Response{StatusCode: 500, Body: http.NoBody}, nil
			}
			<-r.Context().Done()
			return nil, r.Context().Err()
		}))
		_, _ = call(t, rt, "http://a/")
		require.Equal(t, Open, b.State("a"))
		time.Sleep(time.Second)
		fail.Store(false)
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://a/", nil)
		go func() { time.Sleep(10 * time.Millisecond); cancel() }()
		_, err := rt.RoundTrip(req)
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, Open, b.State("a"), "the abandoned trial frees the permit (as a failed trial)")
		time.Sleep(2 * time.Second)
		fail.Store(true)
		_, err = call(t, rt, "http://a/")
		assert.NoError(t, err, "a later trial is let through: the breaker is not stuck")
	})
}

func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureThreshold: 2})
		var slow atomic.Bool
		slow.Store(true)
		var lastCtx context.Context
		rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
			lastCtx = r.Context()
			if slow.Load() {
				<-r.Context().Done()
				return nil, r.Context().Err()
			}
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("body"))}, nil
		}))
		start := time.Now()
		_, err := call(t, rt, "http://a/")
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrTimeout)
		assert.Equal(t, 2*time.Second, time.Since(start), "default Timeout is 2 s")
		assert.Equal(t, Closed, b.State("a"))
		_, err = call(t, rt, "http://a/")
		assert.ErrorIs(t, err, ErrTimeout)
		assert.Equal(t, Open, b.State("a"), "timeouts count as failures")

		// The per-call timer ends when the body is closed, not before.
		b2 := New(Config{})
		slow.Store(false)
		req, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
		resp, err := b2.Transport(rt.(*transport).base).RoundTrip(req)
		require.NoError(t, err)
		assert.NoError(t, lastCtx.Err(), "context alive while the body is open")
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, "body", string(data))
		require.NoError(t, resp.Body.Close())
		assert.ErrorIs(t, lastCtx.Err(), context.Canceled, "closing the body ends the timer")
	})
}

func TestTimeoutDisabled(t *testing.T) {
	b := New(Config{Timeout: -1})
	var hasDeadline bool
	rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
		_, hasDeadline = r.Context().Deadline()
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}))
	_, err := call(t, rt, "http://a/")
	require.NoError(t, err)
	assert.False(t, hasDeadline)
}

func TestOpenFallbacks(t *testing.T) {
	cachedHeader := http.Header{"Content-Type": {"text/plain"}}
	newB := func(cfg Config) (*Breaker, http.RoundTripper, *upstream) {
		cfg.FailureThreshold = 1
		b := New(cfg)
		up := newUpstream(500)
		rt := b.Transport(up)
		_, _ = call(t, rt, "http://a/")
		require.Equal(t, Open, b.State("a"))
		return b, rt, up
	}
	cached := func(r *http.Request) (*http.Response, bool) {
		if r.URL.Path != "/cached" {
			return nil, false
		}
		// The stored response still points at the request that fetched it,
		// with that caller's credentials.
		first, _ := http.NewRequest(http.MethodGet, "http://a/cached", nil)
		first.Header.Set("Authorization", "Bearer someone-else")
		return &http.Response{StatusCode: 200, Header: cachedHeader, Body: io.NopCloser(strings.NewReader("old")),
			Request: first}, true
	}
	doc := &Document{ContentType: "application/json", Body: []byte(`{"items":[]}`)}

	t.Run("cached response for GET", func(t *testing.T) {
		_, rt, up := newB(Config{Cached: cached, Fallback: doc})
		req, _ := http.NewRequest(http.MethodGet, "http://a/cached", nil)
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		assert.Equal(t, "old", string(body))
		assert.Equal(t, "circuit-open", resp.Header.Get(httpx.HeaderDegraded))
		assert.Empty(t, cachedHeader.Get(httpx.HeaderDegraded), "the hook's header map is not modified")
		assert.Same(t, req, resp.Request, "the response answers this request, not the one that filled the cache")
		assert.EqualValues(t, 1, up.calls.Load())
	})
	t.Run("fallback document when nothing cached", func(t *testing.T) {
		_, rt, _ := newB(Config{Cached: cached, Fallback: doc})
		req, _ := http.NewRequest(http.MethodGet, "http://a/other", nil)
		resp, err := rt.RoundTrip(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		assert.Equal(t, `{"items":[]}`, string(body))
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
		assert.Equal(t, "circuit-open", resp.Header.Get(httpx.HeaderDegraded))
		assert.Same(t, req, resp.Request)
	})
	t.Run("unsafe method gets the error and its body closed", func(t *testing.T) {
		_, rt, up := newB(Config{Cached: func(*http.Request) (*http.Response, bool) {
			t.Error("Cached asked for a POST")
			return nil, false
		}, Fallback: doc})
		body := &closeRecorder{Reader: strings.NewReader("payload")}
		req, _ := http.NewRequest(http.MethodPost, "http://a/", body)
		resp, err := rt.RoundTrip(req)
		assert.Nil(t, resp)
		assert.ErrorIs(t, err, ErrOpen)
		assert.True(t, body.closed, "RoundTrip always closes the request body")
		assert.EqualValues(t, 1, up.calls.Load())
	})
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestRegistryBound(t *testing.T) {
	b := New(Config{MaxKeys: 8, FailureThreshold: 1})
	up := newUpstream(200)
	rt := b.Transport(up)
	up.status.Store(500)
	_, _ = call(t, rt, "http://open/")
	require.Equal(t, Open, b.State("open"))
	up.status.Store(200)
	for i := range 100 {
		_, err := call(t, rt, "http://h"+string(rune('a'+i%26))+string(rune('a'+i/26))+"/")
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b.Snapshot()), 8)
	}
	assert.Equal(t, Open, b.State("open"), "an open breaker is not evicted while closed ones can be")

	// Full of open breakers: the least recently used open one goes, and a
	// new key still gets a breaker of its own.
	up.status.Store(500)
	b2 := New(Config{MaxKeys: 2, FailureThreshold: 1})
	rt2 := b2.Transport(up)
	_, _ = call(t, rt2, "http://x/")
	_, _ = call(t, rt2, "http://y/")
	require.Equal(t, Open, b2.State("x"))
	require.Equal(t, Open, b2.State("y"))
	_, _ = call(t, rt2, "http://z/")
	assert.Equal(t, Open, b2.State("z"), "z is protected: its failure opened its breaker")
	assert.Len(t, b2.Snapshot(), 2)
	before := up.calls.Load()
	_, err := call(t, rt2, "http://z/")
	require.ErrorIs(t, err, ErrOpen)
	assert.Equal(t, before, up.calls.Load())
}

func TestKeys(t *testing.T) {
	b := New(Config{FailureThreshold: 1})
	rt := b.Transport(newUpstream(500))
	_, _ = call(t, rt, "http://Example.COM:8080/x")
	assert.Equal(t, Open, b.State("example.com:8080"), "host keys are lower-cased and keep the port")
	assert.Equal(t, Closed, b.State("example.com"))
	assert.Equal(t, Closed, b.State("never.seen"))

	snap := b.Snapshot()
	require.Len(t, snap, 1)
	assert.Equal(t, "example.com:8080", snap[0].Key)
	assert.Equal(t, Open, snap[0].State)
	assert.EqualValues(t, 1, snap[0].Failures)
	assert.Positive(t, snap[0].RetryAfter)

	bk := New(Config{FailureThreshold: 1, Key: func(r *http.Request) string { return r.Header.Get("Tenant") }})
	req, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
	req.Header.Set("Tenant", "t1")
	_, _ = bk.Transport(newUpstream(500)).RoundTrip(req)
	assert.Equal(t, Open, bk.State("t1"))
}

func TestNewPanicsOnBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{FailureRate: 1.5}, {FailureRate: -0.1}, {Jitter: 1}, {FailureThreshold: -1}, {MaxKeys: -1}, {Delay: -1},
	} {
		assert.Panics(t, func() { New(cfg) })
	}
	assert.NotPanics(t, func() { New(Config{}) })
}

func TestStateString(t *testing.T) {
	assert.Equal(t, "closed", Closed.String())
	assert.Equal(t, "open", Open.String())
	assert.Equal(t, "half-open", HalfOpen.String())
	assert.Equal(t, "unknown", State(9).String())
}

func TestUpgradeRequestNotTimed(t *testing.T) {
	b := New(Config{})
	var hasDeadline bool
	rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
		_, hasDeadline = r.Context().Deadline()
		return &http.Response{StatusCode: http.StatusSwitchingProtocols, Body: http.NoBody}, nil
	}))
	req, _ := http.NewRequest(http.MethodGet, "http://a/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	_, err := rt.RoundTrip(req)
	require.NoError(t, err)
	assert.False(t, hasDeadline)
}

func TestOnStateChangeOutsideLocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b *Breaker
		var seen []State
		b = New(Config{FailureThreshold: 1, Delay: time.Second, DisableJitter: true, SuccessThreshold: 1,
			OnStateChange: func(c StateChange) {
				// Re-entering the breaker would deadlock if the hook ran under
				// failsafe-go's lock or the registry's.
				seen = append(seen, b.State(c.Key))
				_ = b.Snapshot()
			}})
		up := newUpstream(500)
		rt := b.Transport(up)
		_, _ = call(t, rt, "http://a/")
		time.Sleep(time.Second)
		up.status.Store(200)
		_, _ = call(t, rt, "http://a/")
		assert.Equal(t, []State{Open, HalfOpen, Closed}, seen)
	})
}

func TestBasePanicReleasesPermit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{FailureThreshold: 1, Delay: time.Second, DisableJitter: true, SuccessThreshold: 1})
		var panicking atomic.Bool
		rt := b.Transport(rtFunc(func(r *http.Request) (*http.Response, error) {
			if panicking.Load() {
				panic("broken transport")
			}
			return &http.Response{StatusCode: 500, Body: http.NoBody}, nil
		}))
		_, _ = call(t, rt, "http://a/")
		time.Sleep(time.Second)
		panicking.Store(true)
		assert.Panics(t, func() { _, _ = call(t, rt, "http://a/") })
		assert.Equal(t, Open, b.State("a"), "the panicking trial counts as a failure")
		time.Sleep(time.Second)
		panicking.Store(false)
		_, err := call(t, rt, "http://a/")
		assert.NoError(t, err, "a later trial is let through")

		nilRT := New(Config{}).Transport(rtFunc(func(*http.Request) (*http.Response, error) { return nil, nil }))
		_, err = call(t, nilRT, "http://a/")
		assert.Error(t, err)

		// A response beside an error: the error wins and the body is closed.
		body := &closeRecorder{Reader: strings.NewReader("x")}
		bothRT := New(Config{}).Transport(rtFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 502, Body: body}, errors.New("broken")
		}))
		req, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
		resp, err := bothRT.RoundTrip(req)
		assert.Nil(t, resp, "no response beside an error")
		assert.Error(t, err)
		assert.True(t, body.closed)
	})
}

// reentrantHandler is a slog handler that ships each record through the
// breaker's own transport, as a log shipper over HTTP would.
type reentrantHandler struct {
	rt   http.RoundTripper
	sent atomic.Int32
}

func (h *reentrantHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *reentrantHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *reentrantHandler) WithGroup(string) slog.Handler            { return h }
func (h *reentrantHandler) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "registry full") {
		return nil
	}
	if h.sent.Add(1) == 1 { // once: the shipment itself finds the registry full
		req, _ := http.NewRequest(http.MethodPost, "http://logs.example/", nil)
		if resp, err := h.rt.RoundTrip(req); err == nil {
			_ = resp.Body.Close()
		}
	}
	return nil
}

func TestRegistryFullLogsOutsideLock(t *testing.T) {
	lh := &reentrantHandler{}
	b := New(Config{MaxKeys: 1, FailureThreshold: 1, Logger: slog.New(lh)})
	up := newUpstream(500)
	rt := b.Transport(up)
	lh.rt = rt
	_, _ = call(t, rt, "http://x/")
	require.Equal(t, Open, b.State("x"))

	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = call(t, rt, "http://y/") // full of open breakers: logged, and the log handler calls the breaker
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: the Logger was called under the registry lock")
	}
	assert.EqualValues(t, 1, lh.sent.Load(), "the eviction of an open breaker was logged")
}
