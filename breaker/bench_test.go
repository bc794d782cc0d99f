package breaker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/timeout"
)

// stubRT answers every request with a new 200 response (one allocation,
// counted in the "stub" baseline) so that wrapping its body never chains.
type stubRT struct{}

func (stubRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
}

func newStub() stubRT { return stubRT{} }

func benchRT(b *testing.B, rt http.RoundTripper, reqs []*http.Request) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		resp, err := rt.RoundTrip(reqs[i%len(reqs)])
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
	}
}

func requests(n int, ctx context.Context) []*http.Request {
	reqs := make([]*http.Request, n)
	for i := range reqs {
		reqs[i], _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://host"+strconv.Itoa(i)+".example/", nil)
	}
	return reqs
}

// BenchmarkTransport measures the happy path over a stub RoundTripper.
// "stub" is the baseline; "failsafe-executor" is failsafe-go's executor with
// one circuit breaker, the path this package avoids; "failsafe-permit" is the
// TryAcquirePermit+RecordSuccess pair every guarded call makes, and
// "time-now" the clock read inside it.
func BenchmarkTransport(b *testing.B) {
	one := requests(1, context.Background())
	b.Run("stub", func(b *testing.B) { benchRT(b, newStub(), one) })
	b.Run("no-timeout/1-host", func(b *testing.B) {
		benchRT(b, New(Config{Timeout: -1}).Transport(newStub()), one)
	})
	b.Run("stub-10000-hosts", func(b *testing.B) {
		// The baseline of "no-timeout/10000-hosts": the same requests, so that
		// the difference is the breakers', not the requests' cache misses.
		benchRT(b, newStub(), requests(10000, context.Background()))
	})
	b.Run("no-timeout/10000-hosts", func(b *testing.B) {
		reqs := requests(10000, context.Background())
		rt := New(Config{Timeout: -1}).Transport(newStub())
		for _, r := range reqs {
			_, _ = rt.RoundTrip(r) // create the breakers
		}
		benchRT(b, rt, reqs)
	})
	b.Run("no-timeout/10000-registered-1-called", func(b *testing.B) {
		reqs := requests(10000, context.Background())
		rt := New(Config{Timeout: -1}).Transport(newStub())
		for _, r := range reqs {
			_, _ = rt.RoundTrip(r)
		}
		benchRT(b, rt, reqs[4242:4243])
	})
	b.Run("caller-deadline/1-host", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		benchRT(b, New(Config{}).Transport(newStub()), requests(1, ctx))
	})
	b.Run("default-timeout/1-host", func(b *testing.B) {
		benchRT(b, New(Config{}).Transport(newStub()), one)
	})
	b.Run("failsafe-executor", func(b *testing.B) {
		cb := circuitbreaker.NewBuilder[*http.Response]().
			WithFailureRateThreshold(0.2, 20, time.Minute).WithDelay(30 * time.Second).Build()
		stub := newStub()
		exec := failsafe.With[*http.Response](cb)
		req := one[0]
		b.ReportAllocs()
		for b.Loop() {
			if _, err := exec.Get(func() (*http.Response, error) { return stub.RoundTrip(req) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("failsafehttp-roundtripper-with-timeout", func(b *testing.B) {
		cb := circuitbreaker.NewBuilder[*http.Response]().
			WithFailureRateThreshold(0.2, 20, time.Minute).WithDelay(30 * time.Second).Build()
		benchRT(b, failsafehttp.NewRoundTripper(newStub(), cb, timeout.New[*http.Response](2*time.Second)), one)
	})
	b.Run("time-now", func(b *testing.B) {
		// The floor under "failsafe-permit": failsafe-go's time-based window
		// reads the wall clock on every Record* call, and holdfast cannot give
		// it another clock. On a VM whose vDSO clock_gettime is slow this one
		// read is most of the breaker's cost.
		b.ReportAllocs()
		var t time.Time
		for b.Loop() {
			t = time.Now()
		}
		_ = t
	})
	b.Run("failsafe-permit", func(b *testing.B) {
		cb := circuitbreaker.NewBuilder[any]().
			WithFailureRateThreshold(0.2, 20, time.Minute).WithDelay(30 * time.Second).Build()
		b.ReportAllocs()
		for b.Loop() {
			if cb.TryAcquirePermit() {
				cb.RecordSuccess()
			}
		}
	})
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

func benchHandler(b *testing.B, h http.Handler) {
	w := &nopWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Pattern = "GET /"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkHandler measures the server-side overhead; "bare" is the
// baseline and "failsafehttp" is failsafehttp.NewHandler with one breaker.
func BenchmarkHandler(b *testing.B) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	b.Run("bare", func(b *testing.B) { benchHandler(b, next) })
	b.Run("no-timeout", func(b *testing.B) { benchHandler(b, New(Config{Timeout: -1}).Handler(next)) })
	b.Run("default-timeout", func(b *testing.B) { benchHandler(b, New(Config{}).Handler(next)) })
	b.Run("on-call", func(b *testing.B) {
		var n int
		benchHandler(b, New(Config{Timeout: -1, OnCall: func(CallEvent) { n++ }}).Handler(next))
	})
	b.Run("failsafehttp", func(b *testing.B) {
		cb := circuitbreaker.NewBuilder[*http.Response]().
			WithFailureRateThreshold(0.2, 20, time.Minute).WithDelay(30 * time.Second).Build()
		benchHandler(b, failsafehttp.NewHandler(next, cb))
	})
}

// BenchmarkTransportParallel checks contention across many hosts.
func BenchmarkTransportParallel(b *testing.B) {
	rt := New(Config{Timeout: -1}).Transport(newStub())
	reqs := requests(10000, context.Background())
	b.ReportAllocs()
	var start atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(start.Add(1013))
		for pb.Next() {
			if resp, err := rt.RoundTrip(reqs[i%len(reqs)]); err == nil {
				_ = resp.Body.Close()
			}
			i += 7
		}
	})
}

// TestTransportHappyPathAllocs guards the budget for the happy path
// without a timer: no allocation above the stub's own response. (With the
// default Timeout, the per-call context and the request copy that carries
// it allocate: TestTimeoutAllocs.)
func TestTransportHappyPathAllocs(t *testing.T) {
	req := requests(1, context.Background())[0]
	rt := New(Config{Timeout: -1}).Transport(newStub())
	run := func(rt http.RoundTripper) float64 {
		return testing.AllocsPerRun(1000, func() {
			resp, _ := rt.RoundTrip(req)
			_ = resp.Body.Close()
		})
	}
	if extra := run(rt) - run(newStub()); extra > 0 {
		t.Errorf("%v allocations per call above the bare RoundTripper, want 0", extra)
	}
}

// TestTimeoutAllocs guards the cost of the default per-call timeout over a
// stub that never waits on the context: on the client side the context
// (which is also the body wrapper that stops it) and the request copy; on
// the server side the context with the status writer, and the request
// copy. No timer is started.
func TestTimeoutAllocs(t *testing.T) {
	req := requests(1, context.Background())[0]
	stub := newStub()
	rt := New(Config{}).Transport(stub)
	roundTrip := func(rt http.RoundTripper) float64 {
		return testing.AllocsPerRun(1000, func() {
			resp, _ := rt.RoundTrip(req)
			_ = resp.Body.Close()
		})
	}
	if extra := roundTrip(rt) - roundTrip(stub); extra > 2 {
		t.Errorf("Transport: %v allocations per call above the bare RoundTripper, want at most 2", extra)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	h := New(Config{}).Handler(next)
	w := &nopWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); n > 2 {
		t.Errorf("Handler: %v allocations per call, want at most 2", n)
	}
}
