package degrade

import (
	"bufio"
	"bytes"
	"container/list"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Handler stores the last good response of next for cacheable GET requests
// and serves it stale when next answers with a 5xx status. A HEAD request
// that fails gets the stored GET response's header (RFC 9110 §9.3.2);
// HEAD responses are never stored.
//
// A successful response streams to the client as next writes it, and a
// copy of up to MaxEntryBytes is kept; a response that is larger, or that
// next flushes (a stream), passes through uncached. A failure is known from
// its status before any of its body is sent, so when next writes a 5xx
// status and a usable stale response is stored, next's header and body are
// held back and discarded, and the stale response is written instead.
// Header fields set on w before Handler ran (by outer middleware) are kept.
// A handler that panics or hijacks the connection is left alone.
//
// Mount Handler inside authentication (after authfallback's Handler), so
// that a request is authenticated before anything is served to it and an
// authentication failure is never replaced by a stored response, and
// outside a circuit breaker's Handler, so that the breaker sees the real
// failures and its open-circuit 503 is replaced by the stored response
// (or connect the breaker's Cached hook to [Stale.Lookup]).
//
// A read that the gate shed and passed on ([Config.StaleInside]) is
// answered here, after authentication, from the response stored for its
// caller's access or with the gate's 503, and never reaches next.
func (s *Stale) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.shedInside(w, r) {
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		sw := &staleWriter{ResponseWriter: w, s: s, r: r, noStore: r.Method == http.MethodHead}
		if h := w.Header(); len(h) > 0 {
			sw.pre = h.Clone()
		}
		next.ServeHTTP(sw, r)
		sw.finish()
	})
}

const (
	swUndecided = iota
	swPass      // written through, not stored
	swTee       // written through and copied
	swHold      // a failure replaced by e
	swHijacked
)

type staleWriter struct {
	http.ResponseWriter
	s       *Stale
	r       *http.Request
	pre     http.Header
	noStore bool // HEAD: replace a failure, store nothing
	state   int
	status  int
	primary string // the primary key of the entry to store (prev's: the same string)
	shared  bool   // header is prev's
	cc      cacheControl
	header  http.Header // what will be stored
	age     time.Duration
	// prev is the stored variant while the body written so far equals its
	// first off bytes: an unchanged response is then stored without
	// copying its body again. buf takes over at the first difference.
	prev   *entry
	prevEl *list.Element // prev's, for refresh
	off    int
	buf    []byte
	held   *entry
	now    time.Time
}

func (w *staleWriter) WriteHeader(code int) {
	if w.state != swUndecided {
		if w.state != swHold && w.state != swHijacked {
			w.ResponseWriter.WriteHeader(code) // let net/http report the superfluous call
		}
		return
	}
	if code < 200 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	w.now = time.Now()
	// The primary key is built on the stack: looking it up allocates
	// nothing.
	var kbuf [256]byte
	if w.s.isFailure(code) {
		key, _ := w.s.appendPrimary(kbuf[:0], w.r)
		if e := w.s.find(key, w.r, w.now); e != nil {
			w.state, w.held = swHold, e
			return
		}
		w.state = swPass
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if w.noStore || !cacheableStatus(code) {
		w.state = swPass
		w.ResponseWriter.WriteHeader(code)
		return
	}
	h := w.ResponseWriter.Header()
	if v := h[httpx.HeaderDegraded]; len(v) > 0 && !slices.Equal(v, w.pre[httpx.HeaderDegraded]) {
		// An inner fallback's answer (a breaker's cached response or
		// fallback document), not a good response: pass it on, keep the
		// stored one. A marker set outside (the gate's) does not count.
		w.state = swPass
		w.ResponseWriter.WriteHeader(code)
		return
	}
	key, scoped := w.s.appendPrimary(kbuf[:0], w.r)
	cc, ok, evict := policy(w.r, !scoped, code, h)
	switch {
	case ok:
		w.state, w.cc, w.age = swTee, cc, ageOf(h)
		w.prev, w.prevEl = w.s.peek(key, w.r)
		if w.prev != nil {
			w.primary = w.prev.primary
		} else {
			w.primary = string(key)
		}
		if w.prev != nil && w.prev.status == code && w.prev.sameHeader(h, w.pre) {
			w.header, w.shared = w.prev.header, true // immutable, shared
		} else {
			w.header = h.Clone()
			for k, v := range w.pre { // outer middleware's fields, unchanged, are not the response's
				if slices.Equal(w.header[k], v) {
					delete(w.header, k)
				}
			}
			storedHeader(w.header)
		}
	case evict:
		w.state = swPass
		w.s.evict(key, w.r)
	default:
		w.state = swPass
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *staleWriter) Write(p []byte) (int, error) {
	if w.state == swUndecided {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case swHold:
		return len(p), nil
	case swTee:
		n, err := w.ResponseWriter.Write(p)
		if err != nil || n < len(p) {
			// The client is gone or the connection broke: next may stop
			// here, and what was copied is not the whole response.
			w.state, w.buf, w.prev = swPass, nil, nil
			return n, err
		}
		w.capture(p)
		return n, nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *staleWriter) capture(p []byte) {
	if w.buf == nil && w.prev != nil {
		if end := w.off + len(p); end <= len(w.prev.body) && bytes.Equal(w.prev.body[w.off:end], p) {
			w.off = end
			return
		}
		w.buf = append(make([]byte, 0, max(2*(w.off+len(p)), 512)), w.prev.body[:w.off]...)
		w.prev = nil
	}
	if int64(len(w.buf)+len(p)) > w.s.maxEntryBytes() {
		w.state, w.buf, w.prev = swPass, nil, nil
		return
	}
	w.buf = append(w.buf, p...)
}

// Flush streams: the response is not stored.
func (w *staleWriter) Flush() {
	if w.state == swUndecided {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case swHold:
		return
	case swTee:
		w.state, w.buf = swPass, nil
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the wrapped writer for http.ResponseController.
func (w *staleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over; the response is not stored.
func (w *staleWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.state, w.buf, w.prev = swHijacked, nil, nil
	}
	return c, rw, err
}

func (w *staleWriter) finish() {
	if w.r.Context().Err() != nil && (w.state == swUndecided || w.state == swTee) {
		// The request was cancelled (client gone, server shutting down):
		// next may have given up before writing all, or anything, of its
		// response. Do not store it over the last good one.
		return
	}
	if w.state == swUndecided {
		w.WriteHeader(http.StatusOK) // what net/http would send: store it
	}
	switch w.state {
	case swHold:
		w.s.served(w.r, w.held, w.status, nil, w.now)
		w.held.write(w.ResponseWriter, w.r, w.pre, time.Now(), w.status)
	case swTee:
		body := w.buf
		if body == nil && w.prev != nil {
			if w.shared && w.off == len(w.prev.body) {
				// The same response again: keep the entry, count its age
				// from now.
				lifetime, sie := freshness(w.cc, w.header, w.now)
				if w.prev.sameAs(w.status, lifetime, sie, w.age) && w.s.refresh(w.prevEl, w.prev, w.now.Sub(w.prev.stored)) {
					return
				}
			}
			body = w.prev.body[:w.off:w.off] // an unchanged prefix or all of it: shared, immutable
		}
		if body == nil {
			body = []byte{}
		}
		w.s.store(newEntry(w.primary, w.r, w.cc, w.status, w.header, w.age, body, w.now))
	}
}
