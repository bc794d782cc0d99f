package breaker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
	"github.com/holdfast-go/holdfast/internal/timeout"
)

// Transport returns a RoundTripper that guards base with one breaker per
// key, by default the request URL's host. A call refused by an open breaker
// never reaches base: it gets the Cached response, the Fallback document
// (safe methods only) or an *OpenError matching ErrOpen. If base is nil,
// http.DefaultTransport is used.
//
// A response with a failing status is still returned with a nil error; the
// breaker only counts it.
func (b *Breaker) Transport(base http.RoundTripper) http.RoundTripper {
	return &transport{b: b, base: base}
}

type transport struct {
	b    *Breaker
	base http.RoundTripper
}

var _ http.RoundTripper = (*transport)(nil)

func (t *transport) baseRT() http.RoundTripper {
	if t.base != nil {
		return t.base
	}
	return http.DefaultTransport
}

func (b *Breaker) clientKey(req *http.Request) string {
	if b.cfg.Key != nil {
		return b.cfg.Key(req)
	}
	if req.URL == nil {
		return ""
	}
	return strings.ToLower(req.URL.Host) // no allocation when already lower case
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.b
	e := b.get(b.clientKey(req))
	if lim := b.cfg.MaxConcurrent; lim > 0 {
		if e.inflight.Add(1) > int32(lim) {
			e.inflight.Add(-1)
			if req.Body != nil {
				_ = req.Body.Close()
			}
			b.refused(req, SideClient, e, OutcomeLimited, 0)
			return nil, &LimitError{Key: e.key, Limit: lim}
		}
		defer e.inflight.Add(-1)
	}
	if !e.cb.TryAcquirePermit() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return b.openResponse(req, e)
	}
	var start time.Time
	if b.cfg.SlowCallDuration > 0 || b.cfg.OnCall != nil {
		start = time.Now()
	}

	parent := req.Context()
	r := req
	// The per-call timeout: its timer starts only if base waits on the
	// context (a real transport does; a stub or a cache does not). A
	// caller deadline at or before ours makes it redundant (tc is nil): it
	// cannot fire first, so it would change no outcome.
	var tc *timeout.Context
	if d := b.cfg.Timeout; d > 0 && len(req.Header["Upgrade"]) == 0 {
		if tc = timeout.New(parent, d, timeoutCause); tc != nil {
			r = req.WithContext(tc)
		}
	}

	returned := false
	defer func() {
		if !returned { // base panicked: release the permit, stop the timer
			b.record(e, failure)
			if tc != nil {
				tc.Stop()
			}
		}
	}()
	resp, err := t.baseRT().RoundTrip(r)
	returned = true
	switch {
	case err == nil && resp == nil:
		err = errNilResponse
	case err != nil && resp != nil: // a base that breaks the contract
		httpx.DrainClose(resp.Body)
		resp = nil
	}

	var o outcome
	status := 0
	switch {
	case err != nil && tc != nil && parent.Err() == nil && tc.TimedOut(): // a clock read only after an error
		err = fmt.Errorf("%w after %v: %w", ErrTimeout, b.cfg.Timeout, err)
		o = b.classify(0, err)
	case err != nil && parent.Err() != nil:
		o = b.endedByCaller(parent, 0, err)
	case err != nil:
		o = b.classify(0, err)
	default:
		status = resp.StatusCode
		o = b.classify(status, nil)
	}
	var lat time.Duration
	if !start.IsZero() {
		lat = time.Since(start)
	}
	slow := b.cfg.SlowCallDuration > 0 && lat > b.cfg.SlowCallDuration
	b.recordCall(e, o, slow, true)
	if f := b.cfg.OnCall; f != nil {
		f(CallEvent{Request: req, Side: SideClient, Key: e.key, State: fromFailsafe(e.cb.State()), Outcome: o.String(),
			Status: status, Slow: slow, Latency: lat})
	}

	if tc != nil {
		if err != nil || resp == nil || resp.Body == nil {
			tc.Stop()
		} else {
			resp.Body = tc.StopOnClose(resp.Body)
		}
	}
	return resp, err
}

var errNilResponse = errors.New("breaker: RoundTripper returned a nil response and a nil error")

// openResponse answers a call refused by e's open breaker.
func (b *Breaker) openResponse(req *http.Request, e *entry) (*http.Response, error) {
	if httpx.IsSafe(req.Method) {
		if resp, ok := b.cached(req); ok {
			// The cached response may carry the request that first fetched
			// it, someone else's, with their credentials: it answers this one.
			resp.Request = req
			b.refused(req, SideClient, e, OutcomeFallback, resp.StatusCode)
			return resp, nil
		}
		if d := b.cfg.Fallback; d != nil {
			b.refused(req, SideClient, e, OutcomeFallback, d.status())
			return d.response(req), nil
		}
	}
	b.refused(req, SideClient, e, OutcomeRejected, 0)
	return nil, &OpenError{Key: e.key, RetryAfter: e.retryAfter()}
}

// cached asks Config.Cached and marks what it returns as degraded, without
// touching the hook's own header map.
func (b *Breaker) cached(req *http.Request) (*http.Response, bool) {
	if b.cfg.Cached == nil {
		return nil, false
	}
	resp, ok := b.cfg.Cached(req)
	if !ok || resp == nil {
		return nil, false
	}
	r := *resp
	r.Header = resp.Header.Clone() // the hook's map may be shared with its cache
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.Header.Del("Set-Cookie") // a cached response must not set another caller's cookies
	httpx.AddDegraded(r.Header, degradedReason)
	if r.Body == nil {
		r.Body = http.NoBody
	}
	return &r, true
}

func (d *Document) status() int {
	if d.Status == 0 {
		return http.StatusOK
	}
	return d.Status
}

func (d *Document) header() http.Header {
	h := make(http.Header, 4)
	if d.ContentType != "" {
		h.Set("Content-Type", d.ContentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(d.Body)))
	h.Set("Cache-Control", "no-store")
	h.Set(httpx.HeaderDegraded, degradedReason)
	return h
}

func (d *Document) response(req *http.Request) *http.Response {
	status := d.status()
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        d.header(),
		Body:          io.NopCloser(bytes.NewReader(d.Body)),
		ContentLength: int64(len(d.Body)),
		Request:       req,
	}
}
