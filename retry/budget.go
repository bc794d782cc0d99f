package retry

import (
	"sync"
	"time"
)

// Default budget: retries are at most 20 % of the requests of the last 10 s,
// plus 3 retries per second that a quiet client may always make.
const (
	DefaultBudgetRatio        = 0.2
	DefaultBudgetMinPerSecond = 3
	DefaultBudgetWindow       = 10 * time.Second
)

const budgetBuckets = 10

// A Budget bounds the load that retries add to a failing upstream, like
// Finagle's RetryBudget and gRPC's retry throttling: over a sliding window,
// retries may be at most a ratio of the requests, plus a small number per
// second. Every request deposits, every retry withdraws; when the budget is
// spent, [Transport] stops retrying and returns the last response at once.
// In a total outage a client therefore sends at most about 1.2 times its
// requests, instead of MaxAttempts times.
//
// Share one Budget between the transports that talk to the same upstream.
// The zero value is a budget with the defaults. A Budget is safe for
// concurrent use.
type Budget struct {
	ratio        float64
	minPerSecond int
	width        time.Duration // of one bucket
	start        time.Time     // monotonic origin of the slots

	mu          sync.Mutex
	buckets     [budgetBuckets]budgetBucket
	reserveSec  int64
	reserveUsed int
}

type budgetBucket struct {
	slot              int64
	requests, retries int64
}

// NewBudget returns a Budget that allows, over the last window, retries up
// to ratio times the requests (0.2 means 20 %), plus minPerSecond retries in
// each second whatever the ratio. A negative or NaN ratio, or a negative
// minPerSecond, counts as 0. If window is zero or negative, 10 s is used. The window is a
// ring of 10 buckets, so it slides in steps of window/10.
func NewBudget(ratio float64, minPerSecond int, window time.Duration) *Budget {
	b := &Budget{}
	b.init(ratio, minPerSecond, window, time.Now())
	return b
}

func (b *Budget) init(ratio float64, minPerSecond int, window time.Duration, now time.Time) {
	if !(ratio > 0) {
		ratio = 0
	}
	if minPerSecond < 0 {
		minPerSecond = 0
	}
	if window <= 0 {
		window = DefaultBudgetWindow
	}
	b.ratio = ratio
	b.minPerSecond = minPerSecond
	b.width = max(window/budgetBuckets, 1)
	b.start = now
	b.reserveSec = -1
}

// slot returns the current bucket, rotated, and the time since b.start.
// b.mu must be held.
func (b *Budget) slot() (time.Duration, int64, *budgetBucket) {
	if b.width == 0 { // zero value
		b.init(DefaultBudgetRatio, DefaultBudgetMinPerSecond, DefaultBudgetWindow, time.Now())
	}
	// time.Since reads only the monotonic clock: much cheaper than time.Now.
	el := time.Since(b.start)
	s := int64(el / b.width)
	if s < 0 {
		s = 0
	}
	bk := &b.buckets[s%budgetBuckets]
	if bk.slot != s {
		*bk = budgetBucket{slot: s}
	}
	return el, s, bk
}

// deposit records a request and returns the current time.
func (b *Budget) deposit() time.Time {
	b.mu.Lock()
	el, _, bk := b.slot()
	bk.requests++
	start := b.start
	b.mu.Unlock()
	return start.Add(el)
}

// withdraw reports whether a retry is allowed now, and records it if so.
func (b *Budget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	el, s, cur := b.slot()
	var requests, retries int64
	for i := range b.buckets {
		if bk := &b.buckets[i]; bk.slot > s-budgetBuckets && bk.slot <= s {
			requests += bk.requests
			retries += bk.retries
		}
	}
	if float64(retries+1) <= b.ratio*float64(requests) {
		cur.retries++
		return true
	}
	sec := int64(el / time.Second)
	if sec != b.reserveSec {
		b.reserveSec, b.reserveUsed = sec, 0
	}
	if b.reserveUsed < b.minPerSecond {
		b.reserveUsed++
		return true
	}
	return false
}
