package degrade

import (
	"bytes"
	"container/list"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Transport returns a RoundTripper that stores the last good response of
// base for cacheable GET requests and returns it stale (also for a HEAD
// request, without a body), with a nil error, when base fails: an error (connection refused, timeout, an open circuit
// breaker) or a 5xx status. A cancellation by the caller itself is returned
// as is. If base is nil, http.DefaultTransport is used.
//
// A response is stored once its body has been read to the end (up to
// MaxEntryBytes). When the caller closes a body whose declared
// Content-Length leaves at most 4 KiB unread (a JSON decoder stops before
// the final newline), Close reads the rest so the response is still
// stored; any other body closed early is not stored, and Close never
// waits for a body of unknown length (a stream) or for a Read in flight.
//
// Place it outside retry and circuit breaker transports (Stale(retry(
// breaker(base)))): they then see the real failures (a stale response looks
// like a success to whatever sits above it) and an open breaker's error
// (breaker.ErrOpen) reaches Stale, which answers with the stored
// response. Scope sees the request as it reaches Stale: if credentials are
// added by an inner transport (oauth2.Transport) and the client acts for
// several identities, set Scope. The request is not
// modified.
func (s *Stale) Transport(base http.RoundTripper) http.RoundTripper {
	return &staleTransport{s: s, base: base}
}

type staleTransport struct {
	s    *Stale
	base http.RoundTripper
}

var _ http.RoundTripper = (*staleTransport)(nil)

func (t *staleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return base.RoundTrip(req)
	}
	s := t.s
	var kbuf [512]byte // the primary key, built when it is needed
	resp, err := base.RoundTrip(req)
	if err != nil {
		if errCanceled(req, err) {
			return nil, err
		}
		now := time.Now()
		key, _ := s.appendPrimary(kbuf[:0], req)
		if e := s.find(key, req, now); e != nil {
			s.served(req, e, 0, err, now)
			return e.response(req, now, 0), nil
		}
		return nil, err
	}
	if s.isFailure(resp.StatusCode) {
		now := time.Now()
		key, _ := s.appendPrimary(kbuf[:0], req)
		if e := s.find(key, req, now); e != nil {
			httpx.DrainClose(resp.Body)
			s.served(req, e, resp.StatusCode, nil, now)
			return e.response(req, now, resp.StatusCode), nil
		}
		return resp, nil
	}
	if req.Method == http.MethodHead { // answered from a stored GET response, never stored
		return resp, nil
	}
	if len(resp.Header[httpx.HeaderDegraded]) > 0 {
		// An inner fallback's answer (a breaker's cached response or
		// fallback document): pass it on, keep the stored good one.
		return resp, nil
	}
	// What the response allows whatever the scope first: a response that
	// may not be stored at all needs no key, unless a variant stored
	// earlier must go.
	cc, ok, evict := policy(req, false, resp.StatusCode, resp.Header)
	if !ok {
		if evict && s.storesURL(req) {
			key, _ := s.appendPrimary(kbuf[:0], req)
			s.evict(key, req)
		}
		return resp, nil
	}
	key, scoped := s.appendPrimary(kbuf[:0], req)
	if !scoped && sharedRefuses(req, cc, resp.Header) {
		s.evict(key, req)
		return resp, nil
	}
	if resp.Body == nil || resp.ContentLength > s.maxEntryBytes() {
		return resp, nil
	}
	c := &captureBody{
		rc: resp.Body, s: s, req: req, cc: cc,
		status: resp.StatusCode, age: ageOf(resp.Header),
		length: resp.ContentLength,
	}
	// The same response as the one stored (a catalogue read again) shares
	// its key, header and body: it is compared as it is read, not copied.
	if prev, el := s.peek(key, req); prev != nil {
		c.primary = prev.primary
		if prev.status == resp.StatusCode && prev.sameHeader(resp.Header, nil) {
			c.prev, c.prevEl, c.header = prev, el, prev.header
			// An unchanged body needs only the time since prev was
			// stored: one read of the monotonic clock, not time.Now's
			// two (see receivedAt).
			c.since = time.Since(prev.stored)
		}
	} else {
		c.primary = string(key)
	}
	if c.prev == nil {
		c.now = time.Now()
		c.header = storedHeader(resp.Header.Clone())
		if resp.ContentLength > 0 {
			c.buf = make([]byte, 0, resp.ContentLength)
		}
	}
	resp.Body = c
	return resp, nil
}

// captureBody copies a response body as the caller reads it and stores
// the response when it reaches EOF within the size limit. mu is held for
// the whole of a Read, so a Close from another goroutine (to abort a
// blocked Read) sees it busy and only closes.
type captureBody struct {
	mu      sync.Mutex
	rc      io.ReadCloser
	length  int64 // declared Content-Length, -1 if unknown
	read    int64 // bytes read so far
	s       *Stale
	req     *http.Request
	primary string
	cc      cacheControl
	status  int
	header  http.Header
	age     time.Duration
	now     time.Time     // when the response was received; see receivedAt
	since   time.Duration // then, how long since prev was stored
	// prev is the stored entry while the body read so far equals its
	// first off bytes (and header is prev's): nothing is copied until
	// the first difference, when buf takes over.
	prev   *entry
	prevEl *list.Element // prev's, when peeked
	off    int
	buf    []byte
	done   bool // stored or given up
}

func (c *captureBody) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readLocked(p)
}

func (c *captureBody) readLocked(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.read += int64(n)
	if !c.done {
		c.capture(p[:n])
		if err == io.EOF && !c.done {
			c.done = true
			c.store()
		} else if err != nil && err != io.EOF {
			c.done, c.buf, c.prev = true, nil, nil
		}
	}
	return n, err
}

func (c *captureBody) capture(p []byte) {
	if c.buf == nil && c.prev != nil {
		if end := c.off + len(p); end <= len(c.prev.body) && bytes.Equal(c.prev.body[c.off:end], p) {
			c.off = end
			return
		}
		c.buf = append(make([]byte, 0, max(c.length, int64(2*(c.off+len(p))), 512)), c.prev.body[:c.off]...)
		c.receivedAt()
		c.prev = nil
	}
	if int64(len(c.buf)+len(p)) > c.s.maxEntryBytes() {
		c.done, c.buf, c.prev = true, nil, nil
		return
	}
	c.buf = append(c.buf, p...)
}

// store stores the whole response read.
func (c *captureBody) store() {
	body := c.buf
	if body == nil && c.prev != nil {
		if c.off == len(c.prev.body) {
			// The same response again: keep the entry, count its age
			// from now. Only a lifetime from Expires counts from the
			// time of the response.
			var now time.Time
			if c.cc.maxAge < 0 {
				now = c.receivedAt()
			}
			lifetime, sie := freshness(c.cc, c.header, now)
			if c.prev.sameAs(c.status, lifetime, sie, c.age) && c.s.refresh(c.prevEl, c.prev, c.since) {
				c.prev = nil
				return
			}
		}
		body = c.prev.body[:c.off:c.off] // an unchanged prefix or all of it: shared, immutable
		c.receivedAt()
	}
	if body == nil {
		body = []byte{}
	}
	c.buf, c.prev = nil, nil
	c.s.store(newEntry(c.primary, c.req, c.cc, c.status, c.header, c.age, body, c.now))
}

// receivedAt returns the time the response was received. A response
// compared with a stored one records only the time since that one was
// stored (since); once it turns out to differ, that instant is rebuilt
// from a new reading of the clock, so that its wall clock time is read,
// not derived from the stored entry's.
func (c *captureBody) receivedAt() time.Time {
	if c.now.IsZero() {
		c.now = time.Now().Add(c.since - time.Since(c.prev.stored))
	}
	return c.now
}

// Close reads what is left of a body the caller did not finish (a JSON
// decoder stops before the final newline) when its Content-Length says at
// most httpx.DrainLimit bytes remain, so that a complete response is still
// stored and the connection can be reused. It does not read a body of
// unknown length, which may be a stream that never ends, and does not
// wait for a Read in flight in another goroutine: it closes at once.
func (c *captureBody) Close() error {
	if c.mu.TryLock() {
		if !c.done && c.length >= 0 && c.length-c.read <= httpx.DrainLimit {
			var scratch [512]byte
			for n := 0; !c.done && n <= httpx.DrainLimit; {
				m, err := c.readLocked(scratch[:])
				n += m
				if err != nil {
					break
				}
			}
		}
		c.done, c.buf, c.prev = true, nil, nil
		c.mu.Unlock()
	}
	return c.rc.Close()
}
