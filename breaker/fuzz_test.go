package breaker

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzKeys feeds arbitrary hosts and patterns (outside input on both sides)
// through a small registry: no panic, the bound holds, open breakers stay.
func FuzzKeys(f *testing.F) {
	f.Add("example.com", "GET /x", 500)
	f.Add("EXAMPLE.com:443", "", 200)
	f.Add("[::1]:80", "POST /{id}", 501)
	f.Add("\x00\xff", "\u212a", 0)
	f.Fuzz(func(t *testing.T, host, pattern string, status int) {
		b := New(Config{MaxKeys: 4, FailureThreshold: 1})
		up := newUpstream(500)
		rt := b.Transport(up)
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: "pinned"}, Header: http.Header{}}
		_, _ = rt.RoundTrip(req)
		require.Equal(t, Open, b.State("pinned"))

		up.status.Store(int32(status))
		for i := range 8 {
			req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: host + string(rune('a'+i))}, Header: http.Header{}}
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Header: http.Header{}, Pattern: pattern}
			b.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if status >= 100 && status <= 999 {
					w.WriteHeader(status)
				}
			})).ServeHTTP(&nopWriter{h: http.Header{}}, r)
		}
		assert.LessOrEqual(t, len(b.Snapshot()), 4)
		if status >= 200 && status <= 399 { // the new hosts stay closed
			assert.Equal(t, Open, b.State("pinned"), "closed breakers are evicted before open ones")
		}
	})
}

// FuzzStateJSON: a State or a Status read from another service's status
// page either decodes to a valid value or fails.
func FuzzStateJSON(f *testing.F) {
	f.Add(`{"key":"a","state":"open","retry_after_seconds":1.5,"requests":3,"failures":2}`)
	f.Add(`{"state":"ajar"}`)
	f.Add(`{"retry_after_seconds":1e300}`)
	f.Fuzz(func(t *testing.T, doc string) {
		var st Status
		if err := json.Unmarshal([]byte(doc), &st); err != nil {
			return
		}
		if st.State < Closed || st.State > HalfOpen {
			t.Fatalf("decoded invalid state %d", st.State)
		}
		if st.RetryAfter < 0 {
			t.Fatalf("negative RetryAfter %v", st.RetryAfter)
		}
		if _, err := json.Marshal(st); err != nil {
			t.Fatalf("a decoded Status does not encode: %v", err)
		}
	})
}
