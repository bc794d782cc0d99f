package degrade

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a ResponseWriter that allocates nothing per request, so
// the benchmarks measure the middleware, not the recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func (w *discardWriter) reset() {
	for k := range w.h {
		delete(w.h, k)
	}
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})

// BenchmarkGate compares the gate in Normal mode with the bare handler.
// Budget: at most 50 ns and 0 allocations above bare.
func BenchmarkGate(b *testing.B) {
	r := httptest.NewRequest(http.MethodPost, "/orders", nil)
	w := &discardWriter{h: http.Header{}}
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			okHandler.ServeHTTP(w, r)
		}
	})
	b.Run("normal", func(b *testing.B) {
		c := New(Config{})
		defer c.Close()
		h := c.Handler(okHandler)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
	// The cost of the options, each against "normal".
	b.Run("on-gate", func(b *testing.B) {
		var n int
		c := New(Config{OnGate: func(GateEvent) { n++ }})
		defer c.Close()
		h := c.Handler(okHandler)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
	b.Run("max-concurrent", func(b *testing.B) {
		c := New(Config{MaxConcurrent: 100})
		defer c.Close()
		h := c.Handler(okHandler)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
}

func TestGateAllocs(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/orders", nil)
	w := &discardWriter{h: http.Header{}}
	for name, cfg := range map[string]Config{"normal": {}, "on-gate": {OnGate: func(GateEvent) {}}, "max-concurrent": {MaxConcurrent: 10}} {
		c := New(cfg)
		h := c.Handler(okHandler)
		if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", name, n)
		}
		c.Close()
	}
}

// BenchmarkStaleHandler compares Stale.Handler storing a 1 KiB response on
// every request (the hit path of a working handler) with the bare handler.
// Budget: at most 2 µs above bare.
func BenchmarkStaleHandler(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	h1k := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=5, stale-if-error=600")
		_, _ = w.Write(body)
	})
	r := httptest.NewRequest(http.MethodGet, "/catalog/items?page=1", nil)
	w := &discardWriter{h: http.Header{}}
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.reset()
			h1k.ServeHTTP(w, r)
		}
	})
	b.Run("stale", func(b *testing.B) {
		s := &Stale{}
		h := s.Handler(h1k)
		b.ReportAllocs()
		for b.Loop() {
			w.reset()
			h.ServeHTTP(w, r)
		}
		if s.Len() != 1 {
			b.Fatalf("stored %d responses, want 1", s.Len())
		}
	})
	b.Run("stale-authenticated", func(b *testing.B) {
		ra := r.Clone(r.Context())
		ra.Header.Set("Authorization", "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln")
		s := &Stale{}
		h := s.Handler(h1k)
		b.ReportAllocs()
		for b.Loop() {
			w.reset()
			h.ServeHTTP(w, ra)
		}
	})
}

// BenchmarkReport measures one outcome report with a few dependencies.
func BenchmarkReport(b *testing.B) {
	c := New(Config{Dependencies: map[string]Mode{"idp": ReadOnly, "payments": Degraded, "db": ReadOnly}})
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		c.Report("payments", nil)
	}
}
