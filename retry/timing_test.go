package retry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/retry"
)

// unlimited is a budget that never refuses, so that timing tests are not
// limited by it.
func unlimited() *retry.Budget { return retry.NewBudget(1e6, 1e6, 0) }

// script answers the attempts with the given statuses and headers, the last
// one repeated, and records when each attempt arrived.
type script struct {
	mu     sync.Mutex
	times  []time.Time
	bodies bodies
	answer func(n int, req *http.Request) (*http.Response, error)
}

func (s *script) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	n := len(s.times)
	s.mu.Unlock()
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return s.answer(n, req)
}

func (s *script) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

func always(status int, kv ...string) *script {
	s := &script{}
	s.answer = func(_ int, req *http.Request) (*http.Response, error) {
		return response(req, status, s.bodies.new("fail"), kv...), nil
	}
	return s
}

func get(t *testing.T, ctx context.Context) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://upstream.test/x", nil)
	require.NoError(t, err)
	return req
}

func TestBackoffFullJitterBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const base, maxDelay = 100 * time.Millisecond, 300 * time.Millisecond
		bounds := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
		var below []int // per retry index: delays below half the bound
		below = make([]int, len(bounds))
		for i := 0; i < 200; i++ {
			up := always(http.StatusServiceUnavailable)
			var delays []time.Duration
			tr := &retry.Transport{Base: up, MaxAttempts: 5, BaseDelay: base, MaxDelay: maxDelay,
				Deadline: time.Minute, Budget: unlimited(),
				OnRetry: func(ev retry.RetryEvent) { delays = append(delays, ev.Delay) }}
			resp, err := tr.RoundTrip(get(t, context.Background()))
			require.NoError(t, err)
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			require.Len(t, up.times, 5)
			require.Len(t, delays, 4)
			for n, d := range delays {
				// The wait that happened is exactly the reported delay, within the bound.
				assert.Equal(t, d, up.times[n+1].Sub(up.times[n]), "retry %d", n)
				assert.GreaterOrEqual(t, d, time.Duration(0))
				assert.LessOrEqual(t, d, bounds[n], "retry %d", n)
				if d < bounds[n]/2 {
					below[n]++
				}
			}
			resp.Body.Close()
		}
		for n, c := range below {
			// Uniform in [0, bound]: about half fall below bound/2.
			assert.InDelta(t, 100, c, 40, "retry %d: jitter is not full", n)
		}
	})
}

func TestBackoffWithoutJitterIsExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := always(http.StatusBadGateway)
		tr := &retry.Transport{Base: up, MaxAttempts: 6, BaseDelay: 100 * time.Millisecond,
			MaxDelay: time.Second, DisableJitter: true, Deadline: time.Minute, Budget: unlimited()}
		start := time.Now()
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		resp.Body.Close()
		var offsets []time.Duration
		for _, at := range up.times {
			offsets = append(offsets, at.Sub(start))
		}
		ms := time.Millisecond
		assert.Equal(t, []time.Duration{0, 100 * ms, 300 * ms, 700 * ms, 1500 * ms, 2500 * ms}, offsets)
	})
}

func TestZeroValueDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := always(http.StatusGatewayTimeout)
		var delays []time.Duration
		tr := &retry.Transport{Base: up, OnRetry: func(ev retry.RetryEvent) { delays = append(delays, ev.Delay) }}
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 3, up.attempts(), "3 attempts by default")
		require.Len(t, delays, 2)
		assert.LessOrEqual(t, delays[0], 100*time.Millisecond)
		assert.LessOrEqual(t, delays[1], 200*time.Millisecond)
	})
}

func TestRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		header func(now time.Time) string
		want   time.Duration
	}{
		{"seconds on 503", 503, func(time.Time) string { return "5" }, 5 * time.Second},
		{"seconds on 429", 429, func(time.Time) string { return "3" }, 3 * time.Second},
		{"HTTP-date", 503, func(now time.Time) string { return now.Add(7 * time.Second).UTC().Format(http.TimeFormat) }, 7 * time.Second},
		{"date in the past", 503, func(now time.Time) string { return now.Add(-time.Hour).UTC().Format(http.TimeFormat) }, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := &script{}
				up.answer = func(n int, req *http.Request) (*http.Response, error) {
					if n == 1 {
						return response(req, tt.status, up.bodies.new("busy"), "Retry-After", tt.header(time.Now())), nil
					}
					return response(req, 200, up.bodies.new("ok")), nil
				}
				// MaxDelay is far below the Retry-After: it must not shorten it.
				tr := &retry.Transport{Base: up, BaseDelay: 100 * time.Millisecond, MaxDelay: 200 * time.Millisecond, Budget: unlimited()}
				resp, err := tr.RoundTrip(get(t, context.Background()))
				require.NoError(t, err)
				assert.Equal(t, 200, resp.StatusCode)
				resp.Body.Close()
				require.Len(t, up.times, 2)
				waited := up.times[1].Sub(up.times[0])
				assert.GreaterOrEqual(t, waited, tt.want, "Retry-After is a lower bound")
				assert.LessOrEqual(t, waited, tt.want+100*time.Millisecond, "only the backoff's jitter on top")
			})
		})
	}
}

func TestRetryAfterNotJitteredBelow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for i := 0; i < 100; i++ {
			up := always(http.StatusServiceUnavailable, "Retry-After", "1")
			var delays []time.Duration
			tr := &retry.Transport{Base: up, BaseDelay: time.Second, MaxDelay: 4 * time.Second, Budget: unlimited(),
				OnRetry: func(ev retry.RetryEvent) { delays = append(delays, ev.Delay) }}
			resp, err := tr.RoundTrip(get(t, context.Background()))
			require.NoError(t, err)
			resp.Body.Close()
			require.Len(t, delays, 2)
			for _, d := range delays {
				require.GreaterOrEqual(t, d, time.Second)
			}
		}
	})
}

func TestRetryAfterBeyondCapReturnsAtOnce(t *testing.T) {
	for _, tt := range []struct {
		name          string
		maxRetryAfter time.Duration
		deadline      time.Duration
		ra            string
	}{
		{"beyond MaxRetryAfter", 5 * time.Second, time.Minute, "6"},
		{"beyond the deadline", 0, 10 * time.Second, "30"},
		{"beyond the deadline, MaxRetryAfter larger", time.Minute, 10 * time.Second, "11"},
		{"huge", 0, 0, "99999999999999999999999"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				up := always(http.StatusServiceUnavailable, "Retry-After", tt.ra)
				var reasons []error
				tr := &retry.Transport{MaxRetryAfter: tt.maxRetryAfter, Deadline: tt.deadline}
				tr.Base = up
				tr.Budget = unlimited()
				tr.OnGiveUp = func(ev retry.GiveUpEvent) { reasons = append(reasons, ev.Reason) }
				tr.OnRetry = func(retry.RetryEvent) { t.Error("retried") }
				start := time.Now()
				resp, err := tr.RoundTrip(get(t, context.Background()))
				require.NoError(t, err)
				assert.Equal(t, time.Duration(0), time.Since(start), "no wait")
				assert.Equal(t, 1, up.attempts())
				assert.Equal(t, tt.ra, resp.Header.Get("Retry-After"), "the caller sees the instruction")
				body, _ := io.ReadAll(resp.Body)
				assert.Equal(t, "fail", string(body), "the returned body is intact")
				resp.Body.Close()
				require.Len(t, reasons, 1)
				assert.ErrorIs(t, reasons[0], retry.ErrDeadline)
			})
		})
	}
}

func TestDeadlineFastFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := always(http.StatusServiceUnavailable)
		var reason error
		tr := &retry.Transport{Base: up, MaxAttempts: 10, BaseDelay: 100 * time.Millisecond, DisableJitter: true,
			Deadline: 250 * time.Millisecond, Budget: unlimited(),
			OnGiveUp: func(ev retry.GiveUpEvent) { reason = ev.Reason }}
		start := time.Now()
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		resp.Body.Close()
		// Attempts at 0 and 100 ms; the next would be at 300 ms, past 250 ms.
		assert.Equal(t, 2, up.attempts())
		assert.Equal(t, 100*time.Millisecond, time.Since(start), "returned at once, without waiting")
		assert.ErrorIs(t, reason, retry.ErrDeadline)
	})
}

func TestContextDeadlineBoundsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := always(http.StatusServiceUnavailable)
		tr := &retry.Transport{Base: up, MaxAttempts: 10, BaseDelay: 100 * time.Millisecond, DisableJitter: true,
			Budget: unlimited()}
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		resp, err := tr.RoundTrip(get(t, ctx))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 2, up.attempts())
		assert.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}

func TestConnectionErrorGivesUpWithTypedError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := errors.New("connection refused")
		var n int
		tr := &retry.Transport{Budget: unlimited(), Base: rtFunc(func(*http.Request) (*http.Response, error) {
			n++
			return nil, refused
		})}
		resp, err := tr.RoundTrip(get(t, context.Background()))
		assert.Nil(t, resp)
		assert.Equal(t, 3, n)
		assert.ErrorIs(t, err, refused)
		assert.ErrorIs(t, err, retry.ErrMaxAttempts)
		var re *retry.Error
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 3, re.Attempts)
	})
}

func TestCancelDuringWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := always(http.StatusServiceUnavailable, "Retry-After", "5")
		ctx, cancel := context.WithCancelCause(context.Background())
		cause := errors.New("caller went away")
		tr := &retry.Transport{Base: up, Budget: unlimited(),
			OnRetry: func(retry.RetryEvent) { time.AfterFunc(time.Second, func() { cancel(cause) }) }}
		start := time.Now()
		resp, err := tr.RoundTrip(get(t, ctx))
		assert.Nil(t, resp)
		assert.ErrorIs(t, err, cause)
		assert.Equal(t, time.Second, time.Since(start))
		assert.Equal(t, 1, up.attempts())
		total, closed := up.bodies.closed()
		assert.Equal(t, 1, total)
		assert.Equal(t, 1, closed, "the discarded response was closed")
	})
}

func TestAttemptTimeoutEndsWhenBodyCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ctxs []context.Context
		up := &script{}
		up.answer = func(n int, req *http.Request) (*http.Response, error) {
			ctxs = append(ctxs, req.Context())
			if n == 1 { // hangs until the attempt times out
				<-req.Context().Done()
				return nil, req.Context().Err()
			}
			return response(req, 200, up.bodies.new("ok")), nil
		}
		tr := &retry.Transport{Base: up, AttemptTimeout: time.Second, BaseDelay: time.Millisecond, Budget: unlimited()}
		start := time.Now()
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		assert.Equal(t, 2, up.attempts(), "a timed-out attempt is retried")
		assert.GreaterOrEqual(t, time.Since(start), time.Second)
		require.Len(t, ctxs, 2)
		assert.NoError(t, ctxs[1].Err(), "the attempt's context lives while the body is open")
		time.Sleep(500 * time.Millisecond)
		assert.NoError(t, ctxs[1].Err())
		require.NoError(t, resp.Body.Close())
		assert.ErrorIs(t, ctxs[1].Err(), context.Canceled, "closing the body ends the attempt")
	})
}

func TestAttemptTimeoutCoversBodyRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var actx context.Context
		tr := &retry.Transport{AttemptTimeout: time.Second, Budget: unlimited(),
			Base: rtFunc(func(req *http.Request) (*http.Response, error) {
				actx = req.Context()
				return response(req, 200, io.NopCloser(strings.NewReader("slow"))), nil
			})}
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		defer resp.Body.Close()
		time.Sleep(time.Second + time.Millisecond)
		assert.ErrorIs(t, actx.Err(), context.DeadlineExceeded)
	})
}

func TestBudgetExhaustedFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		budget := retry.NewBudget(0, 1, 0) // one retry per second, no ratio
		up := always(http.StatusServiceUnavailable)
		var reasons []error
		tr := &retry.Transport{Base: up, Budget: budget, BaseDelay: time.Millisecond,
			OnGiveUp: func(ev retry.GiveUpEvent) { reasons = append(reasons, ev.Reason) }}
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 2, up.attempts(), "one retry allowed, the second refused")
		require.Len(t, reasons, 1)
		assert.ErrorIs(t, reasons[0], retry.ErrBudgetExhausted)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the last response is returned")
		total, closed := up.bodies.closed()
		assert.Equal(t, 2, total)
		assert.Equal(t, 2, closed)
	})
}

// A recorder-based check that the transport works in front of a handler
// through httptest within a bubble.
func TestWithRecorderHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n++
			if n < 3 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok")
		})
		tr := &retry.Transport{Budget: unlimited(), Base: rtFunc(func(req *http.Request) (*http.Response, error) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec.Result(), nil
		})}
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, "ok", string(b))
		assert.Equal(t, 3, n)
	})
}

func TestAttemptTimeoutClampedToDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := &script{}
		up.answer = func(n int, req *http.Request) (*http.Response, error) {
			<-req.Context().Done()
			return nil, req.Context().Err()
		}
		var reason error
		tr := &retry.Transport{Base: up, AttemptTimeout: 5 * time.Second, Deadline: 3 * time.Second, Budget: unlimited(),
			OnGiveUp: func(ev retry.GiveUpEvent) { reason = ev.Reason }}
		start := time.Now()
		resp, err := tr.RoundTrip(get(t, context.Background()))
		assert.Nil(t, resp)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 3*time.Second, time.Since(start), "the attempt ends at the deadline")
		assert.Equal(t, 1, up.attempts())
		assert.ErrorIs(t, reason, retry.ErrDeadline)
	})
}

func TestResponseReturnedWhenCallerCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		up := &script{}
		up.answer = func(n int, req *http.Request) (*http.Response, error) {
			cancel() // the caller gives up while the 503 is on its way
			return response(req, 503, up.bodies.new("busy")), nil
		}
		tr := &retry.Transport{Base: up, Budget: unlimited()}
		resp, err := tr.RoundTrip(get(t, ctx))
		require.NoError(t, err)
		assert.Equal(t, 503, resp.StatusCode)
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, "busy", string(b), "the response is returned, not discarded")
		assert.Equal(t, 1, up.attempts())
	})
}

func TestExtremeDelaysDoNotOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := always(503)
		tr := &retry.Transport{Base: up, MaxAttempts: 100, BaseDelay: 1<<63 - 1, MaxDelay: 1<<63 - 1,
			Deadline: time.Second, Budget: unlimited()}
		resp, err := tr.RoundTrip(get(t, context.Background()))
		require.NoError(t, err)
		resp.Body.Close()
		assert.LessOrEqual(t, up.attempts(), 100)

		up = always(503)
		tr = &retry.Transport{Base: up, MaxAttempts: 70, BaseDelay: time.Nanosecond, MaxDelay: 1<<63 - 1,
			Deadline: -1, Budget: unlimited(), DisableJitter: true}
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		resp, err = tr.RoundTrip(get(t, ctx))
		require.NoError(t, err)
		resp.Body.Close()
		// 1 ns doubling: 2^41 ns is about 37 min; the hour allows about 42 attempts.
		assert.Greater(t, up.attempts(), 30)
		assert.Less(t, up.attempts(), 70)
	})
}
