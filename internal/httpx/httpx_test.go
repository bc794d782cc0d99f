package httpx

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in         string
		max        time.Duration
		want       time.Duration
		wantCapped bool
		wantOK     bool
	}{
		{"", 0, 0, false, false},
		{"   ", 0, 0, false, false},
		{"0", 0, 0, false, true},
		{"120", 0, 120 * time.Second, false, true},
		{" 7 ", 0, 7 * time.Second, false, true},
		{"120", time.Minute, time.Minute, true, true},
		{"-1", 0, 0, false, false},
		{"+5", 0, 0, false, false},
		{"1.5", 0, 0, false, false},
		{"soon", 0, 0, false, false},
		{"99999999999999999999999", time.Hour, time.Hour, true, true},
		{"99999999999", 0, time.Duration(1<<63 - 1), false, true},
		{"Thu, 15 Jan 2026 12:00:30 GMT", 0, 30 * time.Second, false, true},
		{"Thursday, 15-Jan-26 12:01:00 GMT", 0, time.Minute, false, true}, // RFC 850, obsolete but valid
		{"Thu Jan 15 12:00:10 2026", 0, 10 * time.Second, false, true},    // asctime
		{"Thu, 15 Jan 2026 11:00:00 GMT", 0, 0, false, true},              // past
		{"Thu, 15 Jan 2026 13:00:00 GMT", 10 * time.Minute, 10 * time.Minute, true, true},
		{"Thu, 15 Jan 2026 13:00:00", 0, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, capped, ok := ParseRetryAfter(tt.in, now, tt.max)
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.want, d)
			assert.Equal(t, tt.wantCapped, capped)
		})
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "Thu, 15 Jan 2026 12:00:30 GMT", "", "-1", "99999999999999999999"} {
		f.Add(s, int64(time.Minute))
	}
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string, max int64) {
		d, capped, ok := ParseRetryAfter(v, now, time.Duration(max))
		if !ok {
			if d != 0 || capped {
				t.Fatalf("not ok but d=%v capped=%v", d, capped)
			}
			return
		}
		if d < 0 {
			t.Fatalf("negative delay %v for %q", d, v)
		}
		if max > 0 && d > time.Duration(max) {
			t.Fatalf("delay %v beyond cap %v for %q", d, time.Duration(max), v)
		}
		if capped && (max <= 0 || d != time.Duration(max)) {
			t.Fatalf("capped but d=%v max=%v", d, max)
		}
	})
}

func TestMethodClasses(t *testing.T) {
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "TRACE"} {
		assert.True(t, IsSafe(m), m)
		assert.True(t, IsIdempotent(m), m)
	}
	for _, m := range []string{"PUT", "DELETE"} {
		assert.False(t, IsSafe(m), m)
		assert.True(t, IsIdempotent(m), m)
	}
	for _, m := range []string{"POST", "PATCH", "CONNECT", "get", "", "PROPFIND"} {
		assert.False(t, IsSafe(m), m)
		assert.False(t, IsIdempotent(m), m)
	}
}

type countingBody struct {
	r      io.Reader
	read   int
	closed bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += n
	return n, err
}
func (b *countingBody) Close() error { b.closed = true; return nil }

func TestDrainClose(t *testing.T) {
	small := &countingBody{r: strings.NewReader("hello")}
	DrainClose(small)
	assert.True(t, small.closed)
	assert.Equal(t, 5, small.read)

	big := &countingBody{r: strings.NewReader(strings.Repeat("x", 10*DrainLimit))}
	DrainClose(big)
	assert.True(t, big.closed)
	assert.Equal(t, DrainLimit, big.read, "draining is bounded")

	DrainClose(nil) // must not panic
}

func TestErrCircuitOpenMatchesWrapped(t *testing.T) {
	err := errors.Join(errors.New("other"), ErrCircuitOpen)
	assert.ErrorIs(t, err, ErrCircuitOpen)
}

func TestStatusWriter(t *testing.T) {
	t.Run("implicit 200 and byte count", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &StatusWriter{ResponseWriter: rec}
		assert.False(t, w.Written())
		_, _ = w.Write([]byte("abc"))
		w.WriteHeader(500) // ignored by the recorder and by us: status already sent
		assert.Equal(t, 200, w.Status)
		assert.Equal(t, int64(3), w.Bytes)
		assert.True(t, w.Written())
	})
	t.Run("first final status wins, 1xx not recorded", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &StatusWriter{ResponseWriter: rec}
		w.WriteHeader(http.StatusEarlyHints)
		assert.Equal(t, 0, w.Status)
		w.WriteHeader(503)
		assert.Equal(t, 503, w.Status)
	})
	t.Run("flush and unwrap reach the recorder", func(t *testing.T) {
		rec := httptest.NewRecorder()
		w := &StatusWriter{ResponseWriter: rec}
		require.NoError(t, http.NewResponseController(w).Flush())
		assert.True(t, rec.Flushed)
		assert.True(t, w.Flushed)
		assert.Same(t, rec, w.Unwrap())
	})
	t.Run("hijack over real HTTP", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			w := &StatusWriter{ResponseWriter: rw}
			c, buf, err := w.Hijack()
			if err != nil {
				http.Error(rw, err.Error(), 500)
				return
			}
			defer c.Close()
			_, _ = buf.WriteString("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
			_ = buf.Flush()
			if !w.Hijacked || !w.Written() {
				panic("hijack not recorded")
			}
		}))
		defer srv.Close()
		resp, err := http.Get(srv.URL)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	})
	t.Run("hijack unsupported", func(t *testing.T) {
		w := &StatusWriter{ResponseWriter: httptest.NewRecorder()}
		_, _, err := w.Hijack()
		assert.ErrorIs(t, err, http.ErrNotSupported)
		assert.False(t, w.Hijacked)
	})
}
