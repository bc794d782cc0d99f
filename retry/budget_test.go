package retry

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
)

func retriesAllowed(b *Budget) int {
	n := 0
	for b.withdraw() {
		n++
	}
	return n
}

func TestBudgetRatio(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBudget(0.2, 0, 10*time.Second)
		assert.Equal(t, 0, retriesAllowed(b), "no requests, no minimum: no retries")
		for range 100 {
			b.deposit()
		}
		assert.Equal(t, 20, retriesAllowed(b))
		for range 4 {
			b.deposit()
		}
		assert.Equal(t, 0, retriesAllowed(b), "4 more requests are not yet worth a retry")
		b.deposit()
		assert.Equal(t, 1, retriesAllowed(b))
	})
}

func TestBudgetMinimumPerSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBudget(0.2, 3, 10*time.Second)
		assert.Equal(t, 3, retriesAllowed(b))
		time.Sleep(500 * time.Millisecond)
		assert.Equal(t, 0, retriesAllowed(b), "same second")
		time.Sleep(500 * time.Millisecond)
		assert.Equal(t, 3, retriesAllowed(b), "a new second")
	})
}

func TestBudgetWindowSlides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBudget(0.5, 0, 10*time.Second)
		for range 10 {
			b.deposit()
		}
		time.Sleep(5 * time.Second)
		for range 10 {
			b.deposit()
		}
		assert.Equal(t, 10, retriesAllowed(b), "20 requests in the window")
		time.Sleep(5 * time.Second)
		// The first 10 requests left the window; the 10 retries are still in it.
		assert.Equal(t, 0, retriesAllowed(b))
		time.Sleep(5 * time.Second)
		// Everything from before has left the window.
		assert.Equal(t, 0, retriesAllowed(b))
		for range 4 {
			b.deposit()
		}
		assert.Equal(t, 2, retriesAllowed(b))
		time.Sleep(time.Hour)
		assert.Equal(t, 0, retriesAllowed(b), "long idle: nothing left over")
	})
}

func TestBudgetZeroValueUsesDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b Budget
		for range 100 {
			b.deposit()
		}
		assert.Equal(t, 20+DefaultBudgetMinPerSecond, retriesAllowed(&b))
	})
}

func TestNewBudgetOddArguments(t *testing.T) {
	for _, r := range []float64{-1, 0, nanFloat()} {
		b := NewBudget(r, -5, -time.Second)
		for range 100 {
			b.deposit()
		}
		assert.Equal(t, 0, retriesAllowed(b), "ratio %v", r)
	}
}

func nanFloat() float64 { zero := 0.0; return zero / zero }

func TestBudgetConcurrent(t *testing.T) {
	b := NewBudget(0.2, 0, time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				b.deposit()
			}
			n := retriesAllowed(b)
			mu.Lock()
			granted += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, granted, 1600)
	assert.GreaterOrEqual(t, granted, 1)
}
