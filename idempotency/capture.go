package idempotency

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
)

// capture buffers a guarded handler's response, up to max bytes, so that it
// is stored before the client sees it. A handler that flushes, hijacks or
// writes more than max switches it to pass-through: what was buffered is
// sent, the rest goes straight to the client, and the key is released with
// passReason. It implements Unwrap for http.ResponseController.
type capture struct {
	w          http.ResponseWriter
	buf        *bytes.Buffer
	max        int
	status     int
	passReason string // set once passing through
	sentHeader bool
}

func (c *capture) Header() http.Header { return c.w.Header() }

func (c *capture) WriteHeader(code int) {
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
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.passReason == "" && c.buf.Len()+len(p) > c.max {
		c.pass(ReasonOversize)
	}
	if c.passReason != "" {
		return c.w.Write(p)
	}
	return c.buf.Write(p)
}

// Flush streams: the response will not be stored.
func (c *capture) Flush() {
	_ = c.FlushError()
}

// FlushError is Flush for http.ResponseController.
func (c *capture) FlushError() error {
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
	if c.buf.Len() > 0 {
		_, _ = c.w.Write(c.buf.Bytes())
		c.buf.Reset()
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
	if c.buf.Len() > 0 {
		_, _ = c.w.Write(c.buf.Bytes())
	}
}

var _ interface {
	http.Flusher
	http.Hijacker
} = (*capture)(nil)
