package idempotency_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/holdfast-go/holdfast/idempotency"
)

// TestHandlerAllocs guards the allocations of a keyed request (issue 17),
// over the bare handler's, with the memory store. A first request: the
// parsed request, its record key, fingerprint and owner (one string), its
// body, the record and the response body it keeps. A replay: the parsed
// request, its ids and body, and the replayed headers' values.
func TestHandlerAllocs(t *testing.T) {
	// A full store, as in a steady state: each record evicts another.
	s := idempotency.NewMemoryStore(idempotency.MemoryConfig{MaxEntries: 1024})
	defer s.Close()
	h := idempotency.New(idempotency.Config{Store: s}).Handler(app1K)
	body := []byte(`{"sku":42,"qty":1}`)
	rd := bytes.NewReader(body)
	r, _ := http.NewRequest(http.MethodPost, "http://example.com/orders", nil)
	r.ContentLength = int64(len(body))
	r.Header.Set("Authorization", "Bearer alice")
	keyHdr := []string{""}
	r.Header["Idempotency-Key"] = keyHdr
	w := &discardWriter{h: http.Header{}}
	serve := func(h http.Handler, key func() string) float64 {
		return testing.AllocsPerRun(500, func() {
			keyHdr[0] = key()
			rd.Reset(body)
			r.Body = io.NopCloser(rd)
			clear(w.h)
			h.ServeHTTP(w, r)
		})
	}
	keys := make([]string, 20000)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	n := 0
	next := func() string { n++; return keys[n] }
	same := func() string { return "replayed" }
	serve(h, next) // fills the store
	serve(h, next)
	bare := serve(app1K, next)
	if extra := serve(h, next) - bare; extra > 5 {
		t.Errorf("first request: %v allocations over the bare handler, want at most 5", extra)
	}
	if extra := serve(h, same) - bare; extra > 4 {
		t.Errorf("replay: %v allocations over the bare handler, want at most 4", extra)
	}
}
