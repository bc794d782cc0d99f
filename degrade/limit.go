package degrade

import (
	"sync"
	"sync/atomic"
	"time"
)

// limiter bounds the requests in flight, by tier (Config.MaxConcurrent):
// Read is admitted below readMax, Write below writeMax, Critical below max,
// and a Critical request may wait up to wait for a slot; a slot freed while
// one waits goes to it, ahead of every other tier. Admission is one atomic
// add when a slot is free and nobody waits.
type limiter struct {
	max, writeMax, readMax int64
	wait                   time.Duration

	inflight atomic.Int64
	waiting  atomic.Int64 // len(queue), read without mu

	mu    sync.Mutex
	queue []*waiter // Critical requests waiting, oldest first
}

type waiter struct {
	ch      chan struct{} // closed when a slot was handed over
	granted bool          // guarded by limiter.mu
}

func newLimiter(max int, wait time.Duration) *limiter {
	m := int64(max)
	return &limiter{
		max:      m,
		writeMax: max64(1, m*9/10),
		readMax:  max64(1, m*3/4),
		wait:     wait,
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func (l *limiter) limit(t Tier) int64 {
	switch t {
	case Read:
		return l.readMax
	case Write:
		return l.writeMax
	}
	return l.max
}

// acquire takes a slot for a request of tier t, or reports false: shed it.
func (l *limiter) acquire(t Tier) bool {
	lim := l.limit(t)
	if l.waiting.Load() == 0 || t == Critical {
		if n := l.inflight.Add(1); n <= lim {
			return true
		}
		l.inflight.Add(-1)
	}
	if t != Critical || l.wait <= 0 {
		return false
	}
	return l.queueFor()
}

// queueFor waits up to l.wait for a slot handed over by release.
func (l *limiter) queueFor() bool {
	w := &waiter{ch: make(chan struct{})}
	l.mu.Lock()
	if l.inflight.Add(1) <= l.max { // freed meanwhile
		l.mu.Unlock()
		return true
	}
	l.inflight.Add(-1)
	l.queue = append(l.queue, w)
	l.waiting.Add(1)
	l.mu.Unlock()

	timer := time.NewTimer(l.wait)
	defer timer.Stop()
	select {
	case <-w.ch:
		return true
	case <-timer.C:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.granted {
		return true
	}
	for i, q := range l.queue {
		if q == w {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			l.waiting.Add(-1)
			break
		}
	}
	return false
}

// release frees a slot, handing it to the oldest waiter if there is one.
func (l *limiter) release() {
	if l.waiting.Load() == 0 {
		l.inflight.Add(-1)
		if l.waiting.Load() == 0 {
			return
		}
		// A waiter queued meanwhile: give it the slot just freed if still free.
		l.mu.Lock()
		if len(l.queue) > 0 && l.inflight.Add(1) <= l.max {
			l.grantLocked()
		} else if len(l.queue) > 0 {
			l.inflight.Add(-1)
		}
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	if len(l.queue) > 0 {
		l.grantLocked() // the slot passes on: inflight unchanged
	} else {
		l.inflight.Add(-1)
	}
	l.mu.Unlock()
}

func (l *limiter) grantLocked() {
	w := l.queue[0]
	l.queue = l.queue[1:]
	l.waiting.Add(-1)
	w.granted = true
	close(w.ch)
}

// inFlight returns the requests in flight.
func (l *limiter) inFlight() int64 { return l.inflight.Load() }
