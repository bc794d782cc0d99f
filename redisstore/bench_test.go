package redisstore_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/redisstore"
)

// benchStore returns a store whose client counts its round trips.
func benchStore(b *testing.B) (*redisstore.Store, *counter) {
	c := newClient(b)
	prefix := newPrefix(b, c)
	s := redisstore.New(c, redisstore.Config{Prefix: prefix})
	if err := s.Load(b.Context()); err != nil {
		b.Fatal(err)
	}
	cnt := &counter{}
	c.AddHook(cnt)
	return s, cnt
}

func reportTrips(b *testing.B, cnt *counter) {
	b.ReportMetric(float64(cnt.trips.Load())/float64(b.N), "trips/op")
}

// BenchmarkPing is the baseline: one bare round trip to Redis.
func BenchmarkPing(b *testing.B) {
	c := newClient(b)
	cnt := &counter{}
	c.AddHook(cnt)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
	reportTrips(b, cnt)
}

// BenchmarkStore runs the conformance benchmarks (storetest.Bench) on
// this store, reporting round trips per operation.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) (idempotency.Store, func() int64) {
		s, cnt := benchStore(b)
		return s, cnt.trips.Load
	})
}
