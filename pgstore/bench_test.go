package pgstore_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/pgstore"
)

// benchStore returns a store whose pool counts its statements (round
// trips, once the statement cache is warm).
func benchStore(b *testing.B) (*pgstore.Store, *counter) {
	cnt := &counter{}
	pool := newPool(b, cnt)
	s := newStore(b, pool, pgstore.Config{DisableSweeper: true})
	cnt.n.Store(0)
	return s, cnt
}

func reportTrips(b *testing.B, cnt *counter) {
	b.ReportMetric(float64(cnt.n.Load())/float64(b.N), "trips/op")
}

// BenchmarkPing is the baseline: one bare round trip (SELECT 1).
func BenchmarkPing(b *testing.B) {
	cnt := &counter{}
	pool := newPool(b, cnt)
	ctx := b.Context()
	b.ReportAllocs()
	var one int
	for b.Loop() {
		if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
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
		return s, cnt.n.Load
	})
}
