package degrade

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The limiter never lets more than max in, nor a tier more than its share,
// and every slot comes back, under contention with waiting Critical
// requests.
func TestLimiterStress(t *testing.T) {
	l := newLimiter(10, time.Millisecond)
	var cur, peak atomic.Int64
	var perTier [3]atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tier := Tier(g % 3)
			for range 300 {
				if !l.acquire(tier) {
					continue
				}
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				perTier[tier].Add(1)
				time.Sleep(time.Duration(g%3) * 10 * time.Microsecond)
				cur.Add(-1)
				l.release()
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, peak.Load(), int64(10))
	assert.EqualValues(t, 0, l.inFlight())
	assert.EqualValues(t, 0, l.waiting.Load())
	assert.Empty(t, l.queue)
	for i := range perTier {
		assert.Positive(t, perTier[i].Load(), Tier(i).String())
	}
	assert.EqualValues(t, 7, l.limit(Read))
	assert.EqualValues(t, 9, l.limit(Write))
	assert.EqualValues(t, 1, newLimiter(1, 0).limit(Read), "a tier always has a slot")
}

// Breaker hooks run concurrently, so "open" may arrive after "closed";
// SetDownOrdered applies only the latest.
func TestSetDownOrdered(t *testing.T) {
	c := New(Config{Dependencies: map[string]Mode{"payments": Degraded}})
	defer c.Close()
	c.SetDownOrdered("payments", false, "", 2) // closed, seq 2, delivered first
	c.SetDownOrdered("payments", true, "circuit open", 1)
	assert.Equal(t, Normal, c.Mode(), "the late open (seq 1) is ignored")
	c.SetDownOrdered("payments", true, "circuit open", 3)
	assert.Equal(t, Degraded, c.Mode())
	c.SetDown("payments", false, "") // seq 0: always applied
	assert.Equal(t, Normal, c.Mode())
}
