package breaker

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// windowBuckets is the number of buckets Config.Window is counted in, as
// failsafe-go's time-based thresholds do.
const windowBuckets = 10

// window counts a closed breaker's outcomes over Config.Window for the
// failure-rate rule. failsafe-go's own time-based window reads the wall
// clock (time.Now, two clock reads) on every call and holds its lock while
// it does; this one reads only the monotonic clock (time.Since) and
// records a success with two atomic operations.
//
// The window is live only while the breaker is closed: the state-change
// listener resets it and sets active on a change to Closed, and clears
// active on a change away from it. A call that finishes while failsafe-go
// has already closed the breaker but the listener has not yet run is not
// counted: it can never see, and reopen the breaker on, the failures of
// the period before the breaker opened.
type window struct {
	active atomic.Bool
	// lastFail is the bucket index of the latest failure, 0 if none since
	// the last reset: a success checks the rate only when a failure is
	// still in the window.
	lastFail atomic.Int64
	// lastSlow is lastFail for slow calls.
	lastSlow atomic.Int64
	mu       sync.Mutex // serialises bucket rolls and resets
	buckets  [windowBuckets]bucket
}

type bucket struct {
	idx       atomic.Int64 // absolute bucket index (from 1); 0 when unused
	successes atomic.Uint32
	failures  atomic.Uint32
	slow      atomic.Uint32 // calls over SlowCallDuration, of either outcome
}

// now is the index of the current bucket, counted from 1.
func (b *Breaker) now() int64 { return int64(time.Since(b.start))/b.bucketNanos + 1 }

// clock is a bucket index that successes read without reading the clock
// (about 25 ns here, a third of the budget of a call): a timer advances it
// at each bucket boundary while calls use it and stops once a whole bucket
// passes unused; the next call reads the clock and starts it again.
// Failures and Snapshot read the clock.
type clock struct {
	tick  atomic.Int64 // the current bucket index while armed
	armed atomic.Bool  // a timer is pending that will advance tick
	used  atomic.Bool  // tick was read since the timer last fired
}

// coarseNow is now, read from b.clk when its timer runs. A success may
// land in the previous bucket for as long as the timer fires late.
func (b *Breaker) coarseNow() int64 {
	if b.clk.armed.Load() {
		if !b.clk.used.Load() {
			b.clk.used.Store(true)
		}
		return b.clk.tick.Load()
	}
	idx := b.now()
	b.clk.tick.Store(idx) // before armed: a reader that sees armed sees a fresh tick
	b.clk.used.Store(true)
	if b.clk.armed.CompareAndSwap(false, true) {
		b.schedule(idx)
	}
	return idx
}

// schedule arms the timer for the end of bucket idx.
func (b *Breaker) schedule(idx int64) {
	d := time.Duration(idx*b.bucketNanos) - time.Since(b.start)
	time.AfterFunc(max(d, 0), b.fire)
}

func (b *Breaker) fire() {
	idx := b.now()
	b.clk.tick.Store(idx)
	if b.clk.used.Swap(false) {
		b.schedule(idx)
		return
	}
	b.clk.armed.Store(false)
}

// slot returns the bucket for index idx, rolling it over if it still holds
// an older index, or nil if it already holds a newer one (a call delayed
// for a whole Window).
func (w *window) slot(idx int64) *bucket {
	bk := &w.buckets[idx%windowBuckets]
	if bk.idx.Load() == idx {
		return bk
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch cur := bk.idx.Load(); {
	case cur < idx:
		bk.successes.Store(0)
		bk.failures.Store(0)
		bk.slow.Store(0)
		bk.idx.Store(idx)
	case cur > idx:
		return nil
	}
	return bk
}

// sums returns the calls, failures and slow calls in the window ending at
// bucket idx.
func (w *window) sums(idx int64) (calls, failures, slow uint) {
	for i := range w.buckets {
		bk := &w.buckets[i]
		if j := bk.idx.Load(); j > idx-windowBuckets && j <= idx {
			f := uint(bk.failures.Load())
			calls += uint(bk.successes.Load()) + f
			failures += f
			slow += uint(bk.slow.Load())
		}
	}
	return calls, failures, slow
}

// reset empties the window and makes it live.
func (w *window) reset() {
	w.mu.Lock()
	for i := range w.buckets {
		bk := &w.buckets[i]
		bk.idx.Store(0)
		bk.successes.Store(0)
		bk.failures.Store(0)
		bk.slow.Store(0)
	}
	w.lastFail.Store(0)
	w.lastSlow.Store(0)
	w.mu.Unlock()
	w.active.Store(true)
}

// windowRecord counts an outcome in e's window and reports whether the
// window's failure rate has reached Config.FailureRate, or its slow-call
// rate Config.SlowCallRate, with at least MinRequests calls. Like
// failsafe-go, it checks after every call: a success can bring the count up
// to MinRequests.
func (b *Breaker) windowRecord(e *entry, failed, slow bool) bool {
	w := &e.win
	if !w.active.Load() {
		return false
	}
	var idx int64
	if failed || slow {
		idx = b.now()
	} else {
		idx = b.coarseNow()
	}
	bk := w.slot(idx)
	if bk == nil {
		return false
	}
	if slow {
		bk.slow.Add(1)
		if w.lastSlow.Load() < idx {
			w.lastSlow.Store(idx)
		}
	}
	if failed {
		bk.failures.Add(1)
		if w.lastFail.Load() < idx {
			w.lastFail.Store(idx)
		}
	} else {
		bk.successes.Add(1)
		if lf, ls := w.lastFail.Load(), w.lastSlow.Load(); (lf == 0 || lf <= idx-windowBuckets) &&
			(ls == 0 || ls <= idx-windowBuckets) {
			return false // no failure and no slow call in the window: the rates are 0
		}
	}
	calls, failures, slowCalls := w.sums(idx)
	if calls == 0 || calls < uint(b.cfg.MinRequests) {
		return false
	}
	return round(float64(failures)/float64(calls)) >= b.cfg.FailureRate ||
		b.cfg.SlowCallDuration > 0 && round(float64(slowCalls)/float64(calls)) >= b.cfg.SlowCallRate
}

// round rounds a rate to two decimals, as failsafe-go does.
func round(v float64) float64 { return math.Round(v*100) / 100 }

// failCallers remembers the callers of a server-side breaker's recent
// failures (and slow calls), for Config.MinCallers: a small ring of caller
// hashes with the window bucket they failed in. It is touched only by
// failures, under its own lock.
type failCallers struct {
	mu   sync.Mutex
	ring [16]struct {
		h   uint64
		idx int64
	}
	next int
}

// note adds caller h failing at bucket idx and returns the number of
// distinct callers that failed within the window, h included.
func (f *failCallers) note(h uint64, idx int64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	found := false
	for i := range f.ring {
		if f.ring[i].idx != 0 && f.ring[i].h == h {
			f.ring[i].idx = idx
			found = true
			break
		}
	}
	if !found {
		// Replace the oldest slot.
		old := 0
		for i := range f.ring {
			if f.ring[i].idx < f.ring[old].idx {
				old = i
			}
		}
		f.ring[old].h, f.ring[old].idx = h, idx
	}
	n := 0
	for i := range f.ring {
		if j := f.ring[i].idx; j != 0 && j > idx-windowBuckets {
			n++
		}
	}
	return n
}
