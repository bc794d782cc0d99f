package breaker

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFailureRateReachedBySuccess checks that, as with failsafe-go's
// time-based threshold, the rate is checked after a success too: the call
// that brings the count up to MinRequests can open the breaker.
func TestFailureRateReachedBySuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		up := newUpstream(http.StatusOK)
		rt := b.Transport(up)
		pattern(t, rt, up, strings.Repeat("sf", 9)+"f")
		require.Equal(t, Closed, b.State("a"), "19 calls are below MinRequests")
		pattern(t, rt, up, "s")
		assert.Equal(t, Open, b.State("a"), "10 failures of 20 calls")
	})
}

// TestFailureRateAcrossBuckets spreads calls over the window's 6 s buckets.
func TestFailureRateAcrossBuckets(t *testing.T) {
	for _, tt := range []struct {
		name string
		last time.Duration // when the 20th call is made
		want State
	}{
		{"failures still in the window", 59 * time.Second, Open},
		{"failures expired", 61 * time.Second, Closed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				b := New(Config{})
				up := newUpstream(http.StatusOK)
				rt := b.Transport(up)
				pattern(t, rt, up, "ffff") // in the first bucket
				for range 15 {
					time.Sleep(3 * time.Second) // across buckets 1 to 8
					pattern(t, rt, up, "s")
				}
				require.Equal(t, Closed, b.State("a"), "19 calls")
				time.Sleep(tt.last - time.Since(start))
				pattern(t, rt, up, "s")
				assert.Equal(t, tt.want, b.State("a"))
			})
		})
	}
}

// TestWindowIdleClock checks the success clock after idle periods longer
// than a bucket and than the window: its timer stops and restarts.
func TestWindowIdleClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		up := newUpstream(http.StatusOK)
		rt := b.Transport(up)
		pattern(t, rt, up, strings.Repeat("s", 16))
		time.Sleep(61 * time.Second) // the successes expire
		pattern(t, rt, up, "ffff")
		assert.Equal(t, Closed, b.State("a"), "4 calls in the window")
		time.Sleep(20 * time.Second)
		pattern(t, rt, up, strings.Repeat("s", 15))
		assert.Equal(t, Closed, b.State("a"), "19 calls in the window")
		pattern(t, rt, up, "s")
		assert.Equal(t, Open, b.State("a"), "4 of 20")
		assert.Equal(t, b.now(), b.coarseNow())
	})
}

// TestRateWindowResetOnClose checks that failures counted before the
// breaker opened, and calls that finish while it is open, do not count
// after it closes, also for calls that finish as it closes (before the
// state-change listener has reset the window).
func TestRateWindowResetOnClose(t *testing.T) {
	for range 200 {
		b := New(Config{FailureThreshold: 1000, Delay: time.Millisecond, DisableJitter: true})
		up := newUpstream(http.StatusInternalServerError)
		rt := b.Transport(up)
		pattern(t, rt, up, strings.Repeat("f", 20))
		require.Equal(t, Open, b.State("a"), "the rate rule opens")
		e := b.lookup("a")
		for range 50 {
			b.record(e, failure) // calls in flight when it opened
		}
		time.Sleep(2 * time.Millisecond)

		var wg sync.WaitGroup
		deadline := time.Now().Add(5 * time.Second)
		for range 4 {
			wg.Go(func() {
				for !e.cb.IsClosed() && time.Now().Before(deadline) {
				}
				b.record(e, failure) // finishes as the breaker closes
			})
		}
		pattern(t, rt, up, "sss") // half-open, three trials, closed
		wg.Wait()
		require.Equal(t, Closed, b.State("a"), "stale failures reopened the breaker")
		calls, failures, _ := e.win.sums(b.now())
		assert.LessOrEqual(t, failures, uint(4))
		assert.Equal(t, failures, calls)
	}
}
