package idempotency_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/holdfast-go/holdfast/idempotency"
)

// discardWriter is a ResponseWriter that costs (almost) nothing.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

var response1K = bytes.Repeat([]byte("x"), 1024)

// app1K reads the request and answers 201 with a 1 KiB body.
var app1K = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(response1K)
})

// benchRequests runs h b.N times with the key that key(i) returns; the
// request and writer are reused so that only the handler is measured.
func benchRequests(b *testing.B, h http.Handler, key func(i int) string) {
	body := []byte(`{"sku":42,"qty":1}`)
	rd := bytes.NewReader(body)
	r, _ := http.NewRequest(http.MethodPost, "http://example.com/orders", io.NopCloser(rd))
	r.ContentLength = int64(len(body))
	r.Header.Set("Authorization", "Bearer alice")
	r.Header.Set("Content-Type", "application/json")
	keyHdr := []string{""}
	r.Header["Idempotency-Key"] = keyHdr
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		keyHdr[0] = key(i)
		rd.Reset(body)
		r.Body = io.NopCloser(rd)
		clear(w.h)
		h.ServeHTTP(w, r)
		if w.status != http.StatusCreated {
			b.Fatalf("status %d", w.status)
		}
	}
}

func BenchmarkHandler(b *testing.B) {
	keys := func(i int) string { return strconv.Itoa(i) }
	b.Run("Bare", func(b *testing.B) {
		benchRequests(b, app1K, keys)
	})
	b.Run("FirstRequest", func(b *testing.B) {
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		defer s.Close()
		h := idempotency.New(idempotency.Config{Store: s}).Handler(app1K)
		benchRequests(b, h, keys)
	})
	b.Run("Replay", func(b *testing.B) {
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		defer s.Close()
		h := idempotency.New(idempotency.Config{Store: s}).Handler(app1K)
		const distinct = 1024
		for i := range distinct {
			benchRequests(&testing.B{N: 1}, h, func(int) string { return "replay-" + strconv.Itoa(i) })
		}
		benchRequests(b, h, func(i int) string { return "replay-" + strconv.Itoa(i%distinct) })
	})
}
