package idempotency_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
)

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestMemoryStoreConformanceTinyShards(t *testing.T) {
	// One shard and small bounds: eviction runs all the time, and the
	// suite must still pass because it never evicts live records.
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{Shards: 1, MaxEntries: 64, MaxBytes: 1 << 20})
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestMemoryStoreConformanceCollidingHashes(t *testing.T) {
	// Every key's hash is one of two: the shards' maps hold one entry per
	// hash and the rest go to their overflow, which the suite must not see.
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s := idempotency.NewMemoryStoreHashed(idempotency.MemoryConfig{Shards: 1, MaxEntries: 64, MaxBytes: 1 << 20},
			func(key string) uint64 { return uint64(len(key) % 2) })
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestMemoryStoreCollidingHashes(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewMemoryStoreHashed(idempotency.MemoryConfig{Shards: 1, MaxEntries: 3},
		func(string) uint64 { return 42 })
	defer s.Close()
	for _, k := range []string{"a", "b", "c"} {
		claimComplete(t, s, k, []byte(k))
	}
	for _, k := range []string{"a", "b", "c"} {
		rec, ok, err := s.Get(ctx, k)
		require.NoError(t, err)
		require.True(t, ok, k)
		assert.Equal(t, k, string(rec.Response.Body))
	}
	claimComplete(t, s, "d", []byte("d")) // evicts a, the one in the map
	_, ok, _ := s.Get(ctx, "a")
	assert.False(t, ok)
	for _, k := range []string{"b", "c", "d"} {
		rec, ok, _ := s.Get(ctx, k)
		require.True(t, ok, k)
		assert.Equal(t, k, string(rec.Response.Body))
	}
	_, claimed, err := s.Claim(ctx, "b", "fp", "o2", time.Minute)
	require.NoError(t, err)
	assert.False(t, claimed, "b is done")
	assert.Equal(t, 3, s.Len())
}

func claimComplete(t *testing.T, s idempotency.Store, key string, body []byte) {
	t.Helper()
	ctx := context.Background()
	rec, claimed, err := s.Claim(ctx, key, "fp", "o", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	require.NoError(t, s.Complete(ctx, key, "o", rec.Fence, idempotency.Response{Status: 200, Body: body}, time.Hour))
}

func TestMemoryStoreEvictsDoneFirstCompleted(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewMemoryStore(idempotency.MemoryConfig{Shards: 1, MaxEntries: 3})
	defer s.Close()

	claimComplete(t, s, "a", nil)
	claimComplete(t, s, "b", nil)
	_, claimed, err := s.Claim(ctx, "busy", "fp", "o", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)

	claimComplete(t, s, "c", nil) // evicts a
	_, ok, _ := s.Get(ctx, "a")
	assert.False(t, ok, "the first completed record is evicted first")
	for _, k := range []string{"b", "busy", "c"} {
		_, ok, _ := s.Get(ctx, k)
		assert.True(t, ok, k)
	}
	assert.Equal(t, 3, s.Len())
}

func TestMemoryStoreNeverEvictsLiveRecords(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewMemoryStore(idempotency.MemoryConfig{Shards: 1, MaxEntries: 2})
	defer s.Close()

	_, claimed, err := s.Claim(ctx, "inflight", "fp", "o", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	_, created, err := s.Enqueue(ctx, "queued", "fp", idempotency.Request{Method: "POST", URL: "/"}, time.Hour)
	require.NoError(t, err)
	require.True(t, created)

	_, _, err = s.Claim(ctx, "new", "fp", "o", time.Minute)
	assert.ErrorIs(t, err, idempotency.ErrMemoryFull)
	_, _, err = s.Enqueue(ctx, "new", "fp", idempotency.Request{}, time.Hour)
	assert.ErrorIs(t, err, idempotency.ErrMemoryFull)

	for _, k := range []string{"inflight", "queued"} {
		_, ok, _ := s.Get(ctx, k)
		assert.True(t, ok, k)
	}
}

func TestMemoryStoreBoundedByBytes(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewMemoryStore(idempotency.MemoryConfig{Shards: 1, MaxBytes: 100 << 10})
	defer s.Close()
	body := make([]byte, 10<<10)
	for i := range 50 {
		claimComplete(t, s, fmt.Sprint("k", i), body)
	}
	assert.LessOrEqual(t, s.Len(), 10, "about 100 KiB of 10 KiB responses")
	assert.GreaterOrEqual(t, s.Len(), 8)
	_, ok, _ := s.Get(ctx, "k49")
	assert.True(t, ok, "the newest survives")
	_, ok, _ = s.Get(ctx, "k0")
	assert.False(t, ok, "the oldest is evicted")
}

func TestMemoryStoreSweeps(t *testing.T) {
	t.Run("distinct", func(t *testing.T) {
		testMemoryStoreSweeps(t, nil)
	})
	t.Run("colliding", func(t *testing.T) {
		testMemoryStoreSweeps(t, func(string) uint64 { return 7 })
	})
}

func testMemoryStoreSweeps(t *testing.T, hash func(string) uint64) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := idempotency.NewMemoryStoreHashed(idempotency.MemoryConfig{SweepInterval: time.Minute}, hash) // nil: the store's own
		defer s.Close()

		rec, _, err := s.Claim(ctx, "done", "fp", "o", time.Minute)
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, "done", "o", rec.Fence, idempotency.Response{Status: 200}, 30*time.Second))
		_, _, err = s.Enqueue(ctx, "queued", "fp", idempotency.Request{Method: "POST"}, 90*time.Second)
		require.NoError(t, err)
		_, _, err = s.Claim(ctx, "crashed", "fp", "o", 10*time.Second) // never completed
		require.NoError(t, err)
		require.Equal(t, 3, s.Len())

		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		assert.Equal(t, 2, s.Len(), "the done record is swept after its ttl")
		_, ok, _ := s.Get(ctx, "queued")
		assert.True(t, ok)

		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, 0, s.Len(), "queued ttl and the abandoned lease's grace are over")
		q, err := s.ClaimQueued(ctx, "r", time.Minute, 10)
		require.NoError(t, err)
		assert.Empty(t, q)
	})
}

func TestMemoryStoreOversizeRecordStaysEvictable(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewMemoryStore(idempotency.MemoryConfig{Shards: 1, MaxBytes: 4 << 10})
	defer s.Close()
	claimComplete(t, s, "big", make([]byte, 8<<10)) // larger than the bound: kept, alone
	_, ok, _ := s.Get(ctx, "big")
	require.True(t, ok)
	claimComplete(t, s, "next", nil)
	_, ok, _ = s.Get(ctx, "big")
	assert.False(t, ok, "the oversized record is evicted by the next one")
	_, ok, _ = s.Get(ctx, "next")
	assert.True(t, ok)
}

// TestMemoryStoreTwoInstances runs the end-to-end checks with two handlers
// on one MemoryStore (two instances of one process).
func TestMemoryStoreTwoInstances(t *testing.T) {
	storetest.RunHTTP(t, func(t *testing.T) (idempotency.Store, idempotency.Store) {
		s := newStore(t)
		return s, s
	})
}

func TestMemoryStoreSweepsInExpiryOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{Shards: 1, SweepInterval: time.Minute})
		defer s.Close()
		done := func(key string, ttl time.Duration) {
			rec, claimed, err := s.Claim(ctx, key, "fp", "o", time.Minute)
			require.NoError(t, err)
			require.True(t, claimed)
			require.NoError(t, s.Complete(ctx, key, "o", rec.Fence, idempotency.Response{Status: 200}, ttl))
		}
		has := func(key string) bool {
			_, ok, err := s.Get(ctx, key)
			require.NoError(t, err)
			return ok
		}
		for i := range 10 {
			done(fmt.Sprint("early", i), 90*time.Second) // until 90 s
		}
		time.Sleep(30 * time.Second)
		for i := range 10 {
			done(fmt.Sprint("late", i), 2*time.Minute) // until 150 s
		}
		_, _, err := s.Claim(ctx, "running", "fp", "o", 10*time.Minute)
		require.NoError(t, err)
		time.Sleep(91 * time.Second) // to 121 s: swept at 60 s and 120 s
		synctest.Wait()
		assert.Equal(t, 11, s.Len(), "the early records are swept, the late ones and the running one stay")
		assert.True(t, has("late0"))
		assert.True(t, has("running"))

		// A shorter TTL after a longer one: the sweep walks the shard.
		done("long", time.Hour)
		done("short", 30*time.Second)
		time.Sleep(time.Minute) // to 181 s: swept at 180 s
		synctest.Wait()
		assert.False(t, has("short"))
		assert.True(t, has("long"))
		assert.Equal(t, 2, s.Len(), "the late records expired too; long and running stay")
	})
}
