package degrade

import (
	"net/http"
	"time"
)

// Handler stores the last good response of next for cacheable GET requests
// and serves it stale when next answers with a 5xx status.
//
// A successful response streams to the client as next writes it, and a
// copy of up to MaxEntryBytes is kept; a response that is larger, or that
// next flushes (a stream), passes through uncached. A failure is known from
// its status before any of its body is sent, so when next writes a 5xx
// status and a usable stale response is stored, next's header and body are
// held back and discarded, and the stale response is written instead.
// Header fields set on w before Handler ran (by outer middleware) are kept.
// A handler that panics or hijacks the connection is left alone.
func (s *Stale) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		sw := &staleWriter{ResponseWriter: w, s: s, r: r}
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
)

type staleWriter struct {
	http.ResponseWriter
	s       *Stale
	r       *http.Request
	pre     http.Header
	state   int
	status  int
	primary string
	scoped  bool
	cc      cacheControl
	header  http.Header
	buf     []byte
	held    *entry
	now     time.Time
}

func (w *staleWriter) key() string {
	if w.primary == "" {
		sc := w.s.scope(w.r)
		w.scoped = sc != ""
		w.primary = primaryKey(sc, w.r)
	}
	return w.primary
}

func (w *staleWriter) WriteHeader(code int) {
	if w.state != swUndecided {
		if w.state != swHold {
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
	if isFailure(code) {
		if e := w.s.find(w.key(), w.r, w.now); e != nil {
			w.state, w.held = swHold, e
			return
		}
		w.state = swPass
		w.ResponseWriter.WriteHeader(code)
		return
	}
	h := w.ResponseWriter.Header()
	key := w.key()
	cc, ok, evict := policy(w.r, !w.scoped, code, h)
	switch {
	case ok:
		w.state, w.cc, w.header = swTee, cc, h.Clone()
		for k := range w.pre { // fields of outer middleware are not the response's
			delete(w.header, k)
		}
		if cl := w.header.Get("Content-Length"); cl != "" && len(cl) < 12 {
			if n, ok := parseDelta(cl, true); ok && n <= w.s.maxEntryBytes() {
				w.buf = make([]byte, 0, n)
			}
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
		if int64(len(w.buf)+len(p)) > w.s.maxEntryBytes() {
			w.state, w.buf = swPass, nil
		} else {
			w.buf = append(w.buf, p...)
		}
	}
	return w.ResponseWriter.Write(p)
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

func (w *staleWriter) finish() {
	switch w.state {
	case swHold:
		w.s.served(w.r, w.held, w.status, nil, w.now)
		w.held.write(w.ResponseWriter, w.r, w.pre, time.Now())
	case swTee:
		body := w.buf
		if body == nil {
			body = []byte{}
		}
		w.s.store(newEntry(w.key(), w.r, w.cc, w.status, w.header, body, w.now))
	}
}
