package pgstore_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/pgstore"
)

var response1K = idempotency.Response{
	Status: http.StatusCreated,
	Header: http.Header{"Content-Type": {"application/json"}},
	Body:   bytes.Repeat([]byte("x"), 1024),
}

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

// BenchmarkClaimComplete is a first request: Claim, then Complete with a
// 1 KiB response.
func BenchmarkClaimComplete(b *testing.B) {
	s, cnt := benchStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key := "k" + strconv.Itoa(i)
		i++
		rec, claimed, err := s.Claim(ctx, key, "fp", "owner", time.Minute)
		if err != nil || !claimed {
			b.Fatal(err, claimed)
		}
		if err := s.Complete(ctx, key, "owner", rec.Fence, response1K, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	reportTrips(b, cnt)
}

// BenchmarkReplay is a duplicate: one Claim that answers the stored 1 KiB
// response.
func BenchmarkReplay(b *testing.B) {
	s, cnt := benchStore(b)
	ctx := b.Context()
	rec, _, err := s.Claim(ctx, "k", "fp", "owner", time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Complete(ctx, "k", "owner", rec.Fence, response1K, time.Minute); err != nil {
		b.Fatal(err)
	}
	cnt.n.Store(0)
	b.ReportAllocs()
	for b.Loop() {
		rec, claimed, err := s.Claim(ctx, "k", "fp", "other", time.Minute)
		if err != nil || claimed || rec.Response == nil {
			b.Fatal(err, claimed)
		}
	}
	reportTrips(b, cnt)
}

// BenchmarkHandler runs the idempotency handler on this store in front of
// a handler answering 1 KiB: the bare handler (baseline), a first request
// and a replay.
func BenchmarkHandler(b *testing.B) {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(response1K.Body)
	})
	run := func(b *testing.B, h http.Handler, key func(int) string) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r := httptest.NewRequest(http.MethodPost, "/orders", bytes.NewReader([]byte(`{"sku":42}`)))
			r.Header.Set("Authorization", "Bearer alice")
			r.Header.Set("Idempotency-Key", key(i))
			i++
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusCreated {
				b.Fatal(w.Code, w.Body.String())
			}
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, app, strconv.Itoa) })
	b.Run("first", func(b *testing.B) {
		s, cnt := benchStore(b)
		run(b, idempotency.New(idempotency.Config{Store: s}).Handler(app), strconv.Itoa)
		reportTrips(b, cnt)
	})
	b.Run("replay", func(b *testing.B) {
		s, cnt := benchStore(b)
		run(b, idempotency.New(idempotency.Config{Store: s}).Handler(app), func(int) string { return "same" })
		reportTrips(b, cnt)
	})
}
