package breaker

import (
	"bufio"
	"context"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-go/holdfast/internal/caller"
	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/problem"
	"github.com/holdfast-go/holdfast/internal/timeout"
)

// Handler returns middleware that guards next with one breaker per key, by
// default the method and the route pattern that matched ("GET /orders";
// r.Pattern, so put Handler inside the router, around each route's
// handler, for it to be set). The status next writes is observed: 429, 5xx
// other than 501, a call that outlasts Timeout and a panic count as
// failures (the panic continues), and calls over SlowCallDuration as slow;
// but a closed route breaker counts them only once Config.MinCallers
// distinct callers had one, so one caller cannot open a route for everyone.
// While the breaker is open, next is not called: safe methods get the
// Cached response or the Fallback document, everything else 503 with
// Retry-After, Cache-Control: no-store and an application/problem+json body
// of type ProblemCircuitOpen (through Config.WriteProblem when set).
func (b *Breaker) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.serve(next, w, r)
	})
}

// serverKey returns r's default key: the method and the route pattern.
// ServeMux's patterns may carry the method already ("GET /orders"); chi's
// never do ("/orders").
func serverKey(r *http.Request) string {
	p := r.Pattern
	if p == "" {
		p = "*"
	}
	if strings.IndexByte(p, ' ') >= 0 {
		return p
	}
	return r.Method + " " + p
}

// serverEntry returns the entry of r's key; the default key of a route
// already held is looked up without allocating.
func (b *Breaker) serverEntry(r *http.Request) *entry {
	if b.cfg.Key != nil {
		return b.get(b.cfg.Key(r))
	}
	p := r.Pattern
	if p == "" {
		p = "*"
	}
	if strings.IndexByte(p, ' ') >= 0 {
		return b.get(p)
	}
	var buf [128]byte
	k := append(buf[:0], r.Method...)
	k = append(k, ' ')
	k = append(k, p...)
	return b.getBytes(k)
}

func (b *Breaker) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	e := b.serverEntry(r)
	if lim := b.cfg.MaxConcurrent; lim > 0 {
		if e.inflight.Add(1) > int32(lim) {
			e.inflight.Add(-1)
			b.serveLimited(w, r, e)
			return
		}
		defer e.inflight.Add(-1)
	}
	if !e.cb.TryAcquirePermit() {
		b.serveOpen(w, r, e)
		return
	}
	var start time.Time
	if b.cfg.SlowCallDuration > 0 || b.cfg.OnCall != nil {
		start = time.Now()
	}

	parent := r.Context()
	rr := r
	var tc *timeout.Context // the call's timeout: its timer starts only if next waits on it
	d := b.cfg.Timeout
	upgrade := d > 0 && len(r.Header["Upgrade"]) > 0
	var sw *httpx.StatusWriter
	if d > 0 && !upgrade {
		call := &serverCall{sw: httpx.StatusWriter{ResponseWriter: w}} // one allocation for both
		sw = &call.sw
		// Not when the caller's deadline comes first: that ends the call.
		if call.tc.Init(parent, d, timeoutCause) {
			tc = &call.tc
			defer tc.Stop()
			rr = r.WithContext(tc)
		}
	} else {
		sw = &httpx.StatusWriter{ResponseWriter: w}
	}
	var ww http.ResponseWriter = sw
	var ctx context.Context // an upgrade's
	if upgrade {
		// An upgrade (WebSocket) may become a long-lived connection, so
		// the timer stops once the handler hijacks it. It does not stop
		// for the header alone: any client can send one, on any route.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(parent)
		timer := time.AfterFunc(d, func() { cancel(timeoutCause) })
		defer func() { timer.Stop(); cancel(nil) }()
		ww = &upgradeWriter{StatusWriter: sw, stop: timer.Stop}
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
			b.finishServer(e, r, ignored, 0, start)
		} else {
			b.finishServer(e, r, failure, 0, start)
		}
	}()
	next.ServeHTTP(ww, rr)
	returned = true

	status := sw.Status
	if status == 0 {
		status = http.StatusOK // net/http sends 200 for a handler that wrote nothing
	}
	var o outcome
	switch {
	case parent.Err() != nil:
		o = b.endedByCaller(parent, status, nil)
	case sw.Hijacked:
		o = success // the connection outlives the call
		start = time.Time{}
	case tc != nil && tc.TimedOut(), ctx != nil && context.Cause(ctx) == timeoutCause:
		o = b.classify(status, ErrTimeout)
	default:
		o = b.classify(status, nil)
	}
	b.finishServer(e, r, o, status, start)
}

// serverCall holds what one guarded call needs, allocated together.
type serverCall struct {
	sw httpx.StatusWriter
	tc timeout.Context
}

// finishServer records a server-side call that started at start (zero when
// not timed). A failure or slow call counts only once MinCallers distinct
// callers had one.
func (b *Breaker) finishServer(e *entry, r *http.Request, o outcome, status int, start time.Time) {
	var lat time.Duration
	if !start.IsZero() {
		lat = time.Since(start)
	}
	slow := b.cfg.SlowCallDuration > 0 && lat > b.cfg.SlowCallDuration
	counted := true
	if (o == failure || slow) && b.cfg.MinCallers > 1 {
		counted = e.callers.note(b.callerHash(r), b.now()) >= b.cfg.MinCallers
	}
	b.recordCall(e, o, slow, counted)
	if f := b.cfg.OnCall; f != nil {
		f(CallEvent{Request: r, Side: SideServer, Key: e.key, State: fromFailsafe(e.cb.State()), Outcome: o.String(),
			Status: status, Slow: slow, Latency: lat})
	}
}

// callerHash identifies r's caller for MinCallers.
func (b *Breaker) callerHash(r *http.Request) uint64 {
	var h maphash.Hash
	h.SetSeed(b.seed)
	switch {
	case b.cfg.Caller != nil:
		h.WriteString("f")
		h.WriteString(b.cfg.Caller(r))
	case caller.FromContext(r.Context()) != nil:
		h.WriteString("v")
		h.WriteString(caller.FromContext(r.Context()).ID())
	case len(r.Header["Authorization"]) > 0 || len(r.Header["Cookie"]) > 0:
		h.WriteString("c")
		for _, k := range [...]string{"Authorization", "Cookie"} {
			for _, v := range r.Header[k] {
				h.WriteString(strconv.Itoa(len(v)))
				h.WriteString(":")
				h.WriteString(v)
			}
		}
	default:
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		h.WriteString("a")
		h.WriteString(host)
	}
	return h.Sum64()
}

// serveLimited answers a request refused by MaxConcurrent.
func (b *Breaker) serveLimited(w http.ResponseWriter, r *http.Request, e *entry) {
	problem.Render(b.cfg.WriteProblem, w, r, Problem{
		Type:       ProblemConcurrencyLimit,
		Title:      "Too many requests in progress",
		Status:     http.StatusServiceUnavailable,
		Detail:     "Too many requests to this resource are in progress; the request was not attempted.",
		RetryAfter: time.Second,
	})
	if f := b.cfg.OnCall; f != nil {
		f(CallEvent{Request: r, Side: SideServer, Key: e.key, State: fromFailsafe(e.cb.State()), Outcome: OutcomeLimited,
			Status: http.StatusServiceUnavailable})
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
			status := writeResponse(w, resp)
			b.refused(r, SideServer, e, OutcomeFallback, status)
			return
		}
		if d := b.cfg.Fallback; d != nil {
			h := w.Header()
			for k, v := range d.header() {
				if k == httpx.HeaderDegraded {
					httpx.AddDegraded(h, degradedReason)
					continue
				}
				h[k] = v
			}
			w.WriteHeader(d.status())
			_, _ = w.Write(d.Body)
			b.refused(r, SideServer, e, OutcomeFallback, d.status())
			return
		}
	}
	defer b.refused(r, SideServer, e, OutcomeRejected, http.StatusServiceUnavailable)
	problem.Render(b.cfg.WriteProblem, w, r, Problem{
		Type:       ProblemCircuitOpen,
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

// refused reports a call the breaker did not let through.
func (b *Breaker) refused(r *http.Request, side string, e *entry, outcome string, status int) {
	if f := b.cfg.OnCall; f != nil {
		f(CallEvent{Request: r, Side: side, Key: e.key, State: fromFailsafe(e.cb.State()), Outcome: outcome, Status: status})
	}
}

// writeResponse copies resp to w and returns the status written. The
// Holdfast-Degraded reasons already on w (set by outer middleware) are
// kept, and resp's added to them.
func writeResponse(w http.ResponseWriter, resp *http.Response) int {
	defer resp.Body.Close()
	h := w.Header()
	for k, v := range resp.Header {
		if k == httpx.HeaderDegraded {
			for _, r := range v {
				httpx.AddDegraded(h, r)
			}
			continue
		}
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
	return status
}
