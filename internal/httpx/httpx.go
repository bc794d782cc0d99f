// Package httpx holds the HTTP helpers that several holdfast packages share
// and that are easy to get wrong: Retry-After parsing, method classes,
// bounded draining of discarded bodies, and the error kind shared by the
// breaker and retry packages.
package httpx

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HeaderDegraded marks a response that was served by a fallback. Its value is
// a short reason such as "jwks-stale" or "stale-if-error".
const HeaderDegraded = "Holdfast-Degraded"

// HeaderIdempotencyKey is the request header of the IETF httpapi draft.
const HeaderIdempotencyKey = "Idempotency-Key"

// ErrCircuitOpen is the error kind of a call refused by an open circuit
// breaker. breaker.ErrOpen is this value, and retry does not retry an error
// that matches it with errors.Is.
var ErrCircuitOpen = errors.New("breaker: circuit open")

// IsSafe reports whether method is safe (RFC 9110 §9.2.1): GET, HEAD,
// OPTIONS or TRACE. Method names are case-sensitive.
func IsSafe(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// IsIdempotent reports whether method is idempotent (RFC 9110 §9.2.2): the
// safe methods, PUT and DELETE.
func IsIdempotent(method string) bool {
	return IsSafe(method) || method == http.MethodPut || method == http.MethodDelete
}

// ParseRetryAfter parses a Retry-After value (RFC 9110 §10.2.3):
// delta-seconds or an HTTP-date, relative to now. It returns false for an
// empty or malformed value. Negative results (a date in the past) become 0.
// A value beyond max is reported as max with capped set; max <= 0 means no cap.
func ParseRetryAfter(v string, now time.Time, max time.Duration) (d time.Duration, capped, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil { // overflow: far beyond any cap
			secs = 1<<63 - 1
		}
		if secs > int64(1<<63-1)/int64(time.Second) {
			d = time.Duration(1<<63 - 1)
		} else {
			d = time.Duration(secs) * time.Second
		}
	} else {
		t, err := http.ParseTime(v)
		if err != nil {
			return 0, false, false
		}
		d = t.Sub(now)
		if d < 0 {
			d = 0
		}
	}
	if max > 0 && d > max {
		return max, true, true
	}
	return d, false, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// DrainLimit bounds how much of a discarded body DrainClose reads so the
// connection can be reused.
const DrainLimit = 4 << 10

// DrainClose reads at most DrainLimit bytes of body and closes it. A nil body
// is ignored.
func DrainClose(body io.ReadCloser) {
	if body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, body, DrainLimit)
	_ = body.Close()
}
