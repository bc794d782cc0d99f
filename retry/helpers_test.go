package retry_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// rtFunc is a stub RoundTripper.
type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// trackedBody counts whether it was closed.
type trackedBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackedBody) Close() error { b.closed.Store(true); return nil }

// bodies remembers every response body handed out.
type bodies struct {
	mu  sync.Mutex
	all []*trackedBody
}

func (bs *bodies) new(s string) *trackedBody {
	b := &trackedBody{Reader: strings.NewReader(s)}
	bs.mu.Lock()
	bs.all = append(bs.all, b)
	bs.mu.Unlock()
	return b
}

// closed returns how many bodies were handed out and how many were closed.
func (bs *bodies) closed() (total, closed int) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, b := range bs.all {
		if b.closed.Load() {
			closed++
		}
	}
	return len(bs.all), closed
}

func response(req *http.Request, status int, body io.ReadCloser, kv ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h, Body: body, Request: req,
		ProtoMajor: 1, ProtoMinor: 1}
}
