package authfallback

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestExchangeLimiterRefill(t *testing.T) {
	l := newExchangeLimiter(10)
	now := time.Unix(1_700_000_000, 0)
	for i := range 10 {
		_, ok := l.take("alice", now)
		assert.True(t, ok, i)
	}
	wait, ok := l.take("alice", now)
	assert.False(t, ok)
	assert.Equal(t, 6*time.Second, wait, "one token per 6 s at 10 per minute")
	_, ok = l.take("bob", now)
	assert.True(t, ok, "per subject")
	_, ok = l.take("alice", now.Add(3*time.Second))
	assert.False(t, ok)
	_, ok = l.take("alice", now.Add(6*time.Second))
	assert.True(t, ok)
	for i := range 10 {
		_, ok := l.take("alice", now.Add(10*time.Minute))
		assert.True(t, ok, "refilled to the burst, not beyond: %d", i)
	}
	_, ok = l.take("alice", now.Add(10*time.Minute))
	assert.False(t, ok)
}
