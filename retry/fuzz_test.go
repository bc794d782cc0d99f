package retry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/retry"
)

// FuzzRetryAfter sends fuzzed Retry-After values through the transport: it
// must never panic, never wait longer than MaxRetryAfter plus the backoff,
// and never outlast the deadline.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "1", "5", "120", "-1", "1.5", " 3 ", "Sat, 01 Jan 2000 00:00:04 GMT",
		"Fri, 31 Dec 1999 23:59:59 GMT", "Sat, 01 Jan 2000 01:00:00 GMT", "99999999999999999999", "", "\x00"} {
		f.Add(s, uint16(503))
	}
	f.Add("2", uint16(429))
	f.Add("2", uint16(502))
	f.Fuzz(func(t *testing.T, ra string, status uint16) {
		code := int(status)
		if code < 200 || code > 599 {
			code = 200 + code%400
		}
		synctest.Test(t, func(t *testing.T) {
			const maxRA, maxDelay, deadline = 3 * time.Second, 500 * time.Millisecond, 10 * time.Second
			up := always(code, "Retry-After", ra)
			tr := &retry.Transport{Base: up, MaxAttempts: 4, MaxDelay: maxDelay, MaxRetryAfter: maxRA,
				Deadline: deadline, Budget: unlimited(),
				OnRetry: func(ev retry.RetryEvent) {
					if ev.Delay < 0 || ev.Delay > maxRA+maxDelay {
						t.Errorf("delay %v for Retry-After %q", ev.Delay, ra)
					}
					if code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
						return
					}
					// The fake clock has not moved since the delay was chosen.
					if want, _, ok := httpx.ParseRetryAfter(ra, time.Now(), 0); ok {
						if want > maxRA {
							t.Errorf("retried although Retry-After %q (%v) is beyond MaxRetryAfter", ra, want)
						}
						if ev.Delay < want {
							t.Errorf("delay %v below Retry-After %q (%v)", ev.Delay, ra, want)
						}
					}
				}}
			start := time.Now()
			resp, err := tr.RoundTrip(get(t, context.Background()))
			if err != nil || resp == nil {
				t.Fatalf("resp %v err %v", resp, err)
			}
			resp.Body.Close()
			if el := time.Since(start); el >= deadline {
				t.Fatalf("took %v, beyond the deadline", el)
			}
			if resp.StatusCode != code {
				t.Fatalf("status %d, want %d", resp.StatusCode, code)
			}
			total, closed := up.bodies.closed()
			if total != closed {
				t.Fatalf("%d bodies, %d closed", total, closed)
			}
		})
	})
}

// oddBody is a request body that may fail part way.
type oddBody struct {
	r      io.Reader
	failAt int
	read   int
	closed *int
}

var errOdd = errors.New("odd body read error")

func (b *oddBody) Read(p []byte) (int, error) {
	if b.failAt >= 0 && b.read >= b.failAt {
		return 0, errOdd
	}
	if b.failAt >= 0 && len(p) > b.failAt-b.read {
		p = p[:b.failAt-b.read]
	}
	n, err := b.r.Read(p)
	b.read += n
	return n, err
}

func (b *oddBody) Close() error { *b.closed++; return nil }

// FuzzBodies sends odd request and response bodies through the transport:
// no panic, every attempt sees the same bytes, every request body opened is
// closed, every discarded response body is closed.
func FuzzBodies(f *testing.F) {
	f.Add([]byte("payload"), uint8(0), int16(-1), uint8(2), int64(0))
	f.Add([]byte(""), uint8(1), int16(-1), uint8(3), int64(0))
	f.Add([]byte("streamed body"), uint8(2), int16(-1), uint8(2), int64(64))
	f.Add([]byte("streamed body"), uint8(2), int16(3), uint8(2), int64(64))
	f.Add([]byte("too long for the buffer"), uint8(2), int16(-1), uint8(2), int64(4))
	f.Add([]byte("x"), uint8(3), int16(-1), uint8(2), int64(0))
	f.Add([]byte("x"), uint8(4), int16(-1), uint8(2), int64(0))
	f.Fuzz(func(t *testing.T, payload []byte, mode uint8, failAt int16, fails uint8, buffer int64) {
		synctest.Test(t, func(t *testing.T) {
			closed := 0
			newBody := func() io.ReadCloser {
				return &oddBody{r: bytes.NewReader(payload), failAt: int(failAt), closed: &closed}
			}
			req, err := http.NewRequest(http.MethodPost, "http://upstream.test/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Idempotency-Key", "k")
			opened := 0
			switch mode % 5 {
			case 0: // replayable
				req.Body, opened = newBody(), 1
				req.GetBody = func() (io.ReadCloser, error) { opened++; return newBody(), nil }
			case 1: // NoBody
				req.Body = http.NoBody
			case 2: // streamed, maybe buffered
				req.Body, opened = newBody(), 1
			case 3: // GetBody fails
				req.Body, opened = newBody(), 1
				req.GetBody = func() (io.ReadCloser, error) { return nil, errOdd }
			case 4: // GetBody returns nil
				req.Body, opened = newBody(), 1
				req.GetBody = func() (io.ReadCloser, error) { return nil, nil }
			}
			var seen [][]byte
			var respBodies bodies
			n := 0
			tr := &retry.Transport{MaxBufferedBody: buffer % (1 << 20), Budget: unlimited(), MaxAttempts: 4,
				Base: rtFunc(func(r *http.Request) (*http.Response, error) {
					n++
					var got []byte
					if r.Body != nil {
						var rerr error
						got, rerr = io.ReadAll(r.Body)
						r.Body.Close()
						if rerr != nil {
							return nil, rerr
						}
					}
					seen = append(seen, got)
					if n <= int(fails%4) {
						if n%2 == 0 {
							return response(r, 503, nil), nil // a nil body, against the contract
						}
						return response(r, 502, respBodies.new(strings.Repeat("e", n*3000))), nil
					}
					return response(r, 200, respBodies.new("ok")), nil
				})}
			resp, err := tr.RoundTrip(req)
			if err == nil {
				if resp == nil {
					t.Fatal("nil response and nil error")
				}
				resp.Body.Close()
			} else if resp != nil {
				t.Fatal("response with error")
			}
			if failAt < 0 || int(failAt) >= len(payload) {
				for i, s := range seen {
					if !bytes.Equal(s, payload) && mode%5 != 1 {
						t.Fatalf("attempt %d sent %q, want %q", i+1, s, payload)
					}
				}
			}
			if closed != opened {
				t.Fatalf("opened %d request bodies, closed %d", opened, closed)
			}
			total, c := respBodies.closed()
			if total != c {
				t.Fatalf("%d response bodies, %d closed", total, c)
			}
		})
	})
}
