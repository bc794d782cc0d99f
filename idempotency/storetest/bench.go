package storetest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/holdfast-go/holdfast/idempotency"
)

var response1K = idempotency.Response{
	Status: http.StatusCreated,
	Header: http.Header{"Content-Type": {"application/json"}},
	Body:   bytes.Repeat([]byte("x"), 1024),
}

// Bench runs the benchmarks every Store reports, with a 1 KiB response:
// ClaimComplete (a first request: Claim, then Complete), Replay (a
// duplicate: one Claim that answers the stored response), and Handler (the
// idempotency handler on this store in front of a handler answering 1 KiB:
// the bare handler as baseline, a first request and a replay).
//
// newStore returns a fresh store and, if the store talks to a server, a
// function that counts its round trips so far (nil otherwise); Bench
// reports them per operation as "trips/op".
func Bench(b *testing.B, newStore func(b *testing.B) (s idempotency.Store, trips func() int64)) {
	b.Run("ClaimComplete", func(b *testing.B) {
		s, trips := newStore(b)
		ctx := b.Context()
		start := count(trips)
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
		reportTrips(b, trips, start)
	})
	b.Run("Replay", func(b *testing.B) {
		s, trips := newStore(b)
		ctx := b.Context()
		rec, _, err := s.Claim(ctx, "k", "fp", "owner", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Complete(ctx, "k", "owner", rec.Fence, response1K, time.Minute); err != nil {
			b.Fatal(err)
		}
		start := count(trips)
		b.ReportAllocs()
		for b.Loop() {
			rec, claimed, err := s.Claim(ctx, "k", "fp", "other", time.Minute)
			if err != nil || claimed || rec.Response == nil {
				b.Fatal(err, claimed)
			}
		}
		reportTrips(b, trips, start)
	})
	b.Run("Handler", func(b *testing.B) {
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
			s, trips := newStore(b)
			start := count(trips)
			run(b, idempotency.New(idempotency.Config{Store: s}).Handler(app), strconv.Itoa)
			reportTrips(b, trips, start)
		})
		b.Run("replay", func(b *testing.B) {
			s, trips := newStore(b)
			start := count(trips)
			run(b, idempotency.New(idempotency.Config{Store: s}).Handler(app), func(int) string { return "same" })
			reportTrips(b, trips, start)
		})
	})
}

func count(trips func() int64) int64 {
	if trips == nil {
		return 0
	}
	return trips()
}

func reportTrips(b *testing.B, trips func() int64, start int64) {
	if trips != nil {
		b.ReportMetric(float64(trips()-start)/float64(b.N), "trips/op")
	}
}
