package idempotency

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
)

// capture buffers a guarded handler's response, up to max bytes, so that it
// is stored before the client sees it. A handler that flushes, hijacks or
// writes more than max switches it to pass-through: what was buffered is
// sent, the rest goes straight to the client, and the key is released with
// passReason. It implements Unwrap for http.ResponseController.
//
// A response written in one Write (the common case: an encoded document) is
// kept in a slice of its own, which the memory store keeps as it is; from
// the second Write on, the response goes to a pooled buffer. Once the
// handler returned (returned), every Write fails: a handler that writes
// late (net/http forbids it, but a goroutine it left may) never writes into
// what is being stored, nor into a buffer that another request reuses. mu
// orders such a late write against returned.
type capture struct {
	w          http.ResponseWriter
	body       []byte        // the response, while one Write made it
	buf        *bytes.Buffer // the response from the second Write on, from pool
	pool       *sync.Pool
	max        int
	status     int
	passReason string // set once passing through
	sentHeader bool
	mu         sync.Mutex // guards done against a late writer's goroutine
	done       bool       // the handler returned
}

// errWriteAfterReturn is what a Write gets after the handler returned.
var errWriteAfterReturn = errors.New("idempotency: write after the handler returned")

// size is the number of bytes buffered.
func (c *capture) size() int {
	if c.buf != nil {
		return c.buf.Len()
	}
	return len(c.body)
}

// bytes returns the buffered response, valid until finish.
func (c *capture) bytes() []byte {
	if c.buf != nil {
		return c.buf.Bytes()
	}
	return c.body
}

// owned returns the buffered response in a slice of its own, which the
// caller may keep: the slice the one Write made, or a copy.
func (c *capture) owned() []byte {
	if c.buf != nil {
		return bytes.Clone(c.buf.Bytes())
	}
	return c.body
}

// reset drops what was buffered.
func (c *capture) reset() {
	c.body = nil
	if c.buf != nil {
		c.buf.Reset()
	}
}

// returned marks the handler returned: from now on writes fail, and
// nothing but the caller touches what was buffered.
func (c *capture) returned() {
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

// finish ends the capture: the pooled buffer goes back to the pool.
func (c *capture) finish() {
	c.returned()
	c.body = nil
	if b := c.buf; b != nil {
		c.buf = nil
		if b.Cap() <= 64<<10 { // do not keep big buffers around
			b.Reset()
			c.pool.Put(b)
		}
	}
}

func (c *capture) Header() http.Header { return c.w.Header() }

func (c *capture) WriteHeader(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	if code < 200 {
		// Informational responses (103 Early Hints) go out at once.
		if c.status == 0 {
			c.w.WriteHeader(code)
		}
		return
	}
	if c.status != 0 {
		return // superfluous, as net/http would say
	}
	c.status = code
	if c.passReason != "" {
		c.sendHeader()
	}
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return 0, errWriteAfterReturn
	}
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.passReason == "" && c.size()+len(p) > c.max {
		c.pass(ReasonOversize)
	}
	switch {
	case c.passReason != "":
		return c.w.Write(p)
	case len(p) == 0:
	case c.buf != nil:
		return c.buf.Write(p)
	case c.body == nil:
		c.body = bytes.Clone(p)
	default:
		// A second Write: the response goes on in a pooled buffer.
		c.buf = c.pool.Get().(*bytes.Buffer)
		c.buf.Write(c.body)
		c.body = nil
		c.buf.Write(p)
	}
	return len(p), nil
}

// Flush streams: the response will not be stored.
func (c *capture) Flush() {
	_ = c.FlushError()
}

// FlushError is Flush for http.ResponseController.
func (c *capture) FlushError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return errWriteAfterReturn
	}
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.pass(ReasonStreaming)
	return http.NewResponseController(c.w).Flush()
}

// Hijack hands the connection over; the response will not be stored.
func (c *capture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if c.passReason == "" {
		c.passReason = ReasonHijacked
		c.sentHeader = true // nothing may be written through net/http any more
	}
	return http.NewResponseController(c.w).Hijack()
}

func (c *capture) Unwrap() http.ResponseWriter { return c.w }

// pass switches to pass-through, sending what was buffered.
func (c *capture) pass(reason string) {
	if c.passReason != "" {
		return
	}
	c.passReason = reason
	if c.status != 0 {
		c.sendHeader()
	}
	if c.size() > 0 {
		_, _ = c.w.Write(c.bytes())
		c.reset()
	}
}

func (c *capture) sendHeader() {
	if !c.sentHeader {
		c.sentHeader = true
		c.w.WriteHeader(c.status)
	}
}

// send writes the buffered response to the client.
func (c *capture) send() {
	if c.passReason != "" {
		return
	}
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.sendHeader()
	if c.size() > 0 {
		_, _ = c.w.Write(c.bytes())
	}
}

var _ interface {
	http.Flusher
	http.Hijacker
} = (*capture)(nil)
