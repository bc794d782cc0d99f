package breaker

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
)

// Handler returns middleware that guards next with one breaker per key, by
// default the ServeMux pattern that matched (r.Pattern; put Handler inside
// the mux, around each route's handler, for it to be set). The status next
// writes is observed: 5xx other than 501, a call that outlasts Timeout and
// a panic count as failures (the panic continues). While the breaker is
// open, next is not called: safe methods get the Cached response or the
// Fallback document, everything else 503 with Retry-After, Cache-Control:
// no-store and an application/problem+json body.
func (b *Breaker) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.serve(next, w, r)
	})
}

func (b *Breaker) serverKey(r *http.Request) string {
	if b.cfg.Key != nil {
		return b.cfg.Key(r)
	}
	if r.Pattern != "" {
		return r.Pattern
	}
	return "*"
}

func (b *Breaker) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	e := b.get(b.serverKey(r))
	if e == nil {
		next.ServeHTTP(w, r)
		return
	}
	if !e.cb.TryAcquirePermit() {
		b.serveOpen(w, r, e)
		return
	}

	parent := r.Context()
	rr := r
	sw := &httpx.StatusWriter{ResponseWriter: w}
	var ww http.ResponseWriter = sw
	var ctx context.Context
	if d := b.cfg.Timeout; d > 0 {
		if len(r.Header["Upgrade"]) == 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeoutCause(parent, d, timeoutCause)
			defer cancel()
		} else {
			// An upgrade (WebSocket) may become a long-lived connection, so
			// the timer stops once the handler hijacks it. It does not stop
			// for the header alone: any client can send one, on any route.
			var cancel context.CancelCauseFunc
			ctx, cancel = context.WithCancelCause(parent)
			timer := time.AfterFunc(d, func() { cancel(timeoutCause) })
			defer func() { timer.Stop(); cancel(nil) }()
			ww = &upgradeWriter{StatusWriter: sw, stop: timer.Stop}
		}
		rr = r.WithContext(ctx)
	}
	returned := false
	defer func() {
		if returned {
			return
		}
		// next panicked (or called runtime.Goexit). Not recovering keeps
		// the original stack; the panic goes on after this records it.
		if parent.Err() != nil {
			b.record(e, ignored)
		} else {
			b.record(e, failure)
		}
	}()
	next.ServeHTTP(ww, rr)
	returned = true

	status := sw.Status
	if status == 0 {
		status = http.StatusOK // net/http sends 200 for a handler that wrote nothing
	}
	switch {
	case parent.Err() != nil:
		b.record(e, b.endedByCaller(parent, status, nil))
	case sw.Hijacked:
		b.record(e, success) // the connection outlives the call
	case ctx != nil && context.Cause(ctx) == timeoutCause:
		b.record(e, b.classify(status, ErrTimeout))
	default:
		b.record(e, b.classify(status, nil))
	}
}

// upgradeWriter stops the call's timer when the handler takes over the
// connection.
type upgradeWriter struct {
	*httpx.StatusWriter
	stop func() bool
}

// Hijack hands the connection over and, if that worked, stops the timer.
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.StatusWriter.Hijack()
	if err == nil {
		w.stop()
	}
	return c, rw, err
}

// serveOpen answers a request refused by e's open breaker.
func (b *Breaker) serveOpen(w http.ResponseWriter, r *http.Request, e *entry) {
	if httpx.IsSafe(r.Method) {
		if resp, ok := b.cached(r); ok {
			writeResponse(w, resp)
			return
		}
		if d := b.cfg.Fallback; d != nil {
			h := w.Header()
			for k, v := range d.header() {
				h[k] = v
			}
			w.WriteHeader(d.status())
			_, _ = w.Write(d.Body)
			return
		}
	}
	problem.Write(w, problem.Problem{
		Type:       "circuit-open",
		Title:      "Service temporarily unavailable",
		Status:     http.StatusServiceUnavailable,
		Detail:     "A dependency of this resource is failing; the request was not attempted.",
		RetryAfter: max(e.retryAfter(), 1), // problem rounds up to at least 1 s
	})
}

// hopHeaders are not copied from a cached response (RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func writeResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = append([]string(nil), v...)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	status := resp.StatusCode
	if status < 200 || status > 999 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = io.Copy(w, resp.Body)
}
