// Package timeout provides a per-call timeout context whose timer is only
// started when someone waits on it.
//
// The clock is read as time.Until of a deadline that carries a monotonic
// reading: that reads only the monotonic clock, cheaper than time.Now.
//
// context.WithTimeout costs a timer, a done channel and a registration with
// the parent on every call (four allocations), even when no one ever selects
// on the context: a handler or RoundTripper that answers from memory. A
// [Context] costs one allocation; its Err compares the clock with the
// deadline, and only Done (or a child context, or context.AfterFunc, which
// need Done) makes the real context.WithDeadlineCause underneath, so a
// waiter is woken at the deadline exactly as before and context.Cause
// reports the cause.
package timeout

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a context that ends at a deadline, when its parent ends, or
// when Stop is called, like the one context.WithDeadlineCause returns. It
// is safe for concurrent use.
type Context struct {
	parent   context.Context
	deadline time.Time
	cause    error

	made    atomic.Bool // inner and cancel are set and never change again
	stopped atomic.Bool
	mu      sync.Mutex // serialises the making of inner
	inner   context.Context
	cancel  context.CancelFunc

	body io.ReadCloser // what StopOnClose wraps
}

// New returns a Context that ends d from now, with cause as its
// context.Cause when the deadline ends it, or nil when parent's own
// deadline comes no later: that one would end it first, so parent serves
// as it is.
func New(parent context.Context, d time.Duration, cause error) *Context {
	deadline, ok := deadlineFor(parent, d)
	if !ok {
		return nil
	}
	return &Context{parent: parent, deadline: deadline, cause: cause}
}

// deadlineFor returns the deadline d from now, and false when parent's
// comes no later.
func deadlineFor(parent context.Context, d time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(d)
	if pd, ok := parent.Deadline(); ok && !pd.After(deadline) {
		return time.Time{}, false
	}
	return deadline, true
}

// Init makes the zero Context c one that ends d from now, for a caller
// that allocates it inside a struct of its own, and reports true; it
// reports false, leaving c unused, when parent's own deadline comes no
// later. c must not be copied once initialised, nor initialised twice.
func (c *Context) Init(parent context.Context, d time.Duration, cause error) bool {
	deadline, ok := deadlineFor(parent, d)
	if !ok {
		return false
	}
	c.parent, c.deadline, c.cause = parent, deadline, cause
	return true
}

// ensure makes the real context, once.
func (c *Context) ensure() context.Context {
	if c.made.Load() {
		return c.inner
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.made.Load() {
		c.inner, c.cancel = context.WithDeadlineCause(c.parent, c.deadline, c.cause)
		// made before stopped is read, the reverse of Stop: one of the
		// two sees the other and cancels.
		c.made.Store(true)
		if c.stopped.Load() {
			c.cancel()
		}
	}
	return c.inner
}

// Deadline returns the deadline.
func (c *Context) Deadline() (time.Time, bool) { return c.deadline, true }

// Done returns a channel closed when c ends; the first call starts the
// timer.
func (c *Context) Done() <-chan struct{} { return c.ensure().Done() }

// Err returns nil while c has not ended, else context.DeadlineExceeded,
// context.Canceled or the parent's error, as context.WithDeadline's would.
func (c *Context) Err() error {
	if !c.made.Load() && !c.stopped.Load() && c.parent.Err() == nil && time.Until(c.deadline) > 0 {
		return nil
	}
	return c.ensure().Err()
}

// Value returns the parent's value for key. A lookup that yields a context
// is the context package looking for the cancellable context it attaches
// children and context.Cause to: it gets the real one.
func (c *Context) Value(key any) any {
	if c.made.Load() {
		return c.inner.Value(key)
	}
	v := c.parent.Value(key)
	if _, ok := v.(context.Context); ok {
		return c.ensure().Value(key)
	}
	return v
}

// Stop ends c (context.Canceled) and stops its timer. It may be called
// more than once.
func (c *Context) Stop() {
	c.stopped.Store(true)
	if c.made.Load() {
		c.cancel()
	}
}

// TimedOut reports whether c ended at its deadline, rather than by Stop or
// with its parent.
func (c *Context) TimedOut() bool {
	if c.made.Load() {
		return context.Cause(c.inner) == c.cause && c.parent.Err() == nil
	}
	return !c.stopped.Load() && c.parent.Err() == nil && time.Until(c.deadline) <= 0
}

// String names the context, like the context package's own.
func (c *Context) String() string { return "timeout.Context" }

// StopOnClose wraps a response body so that closing it stops c: the
// timeout then covers the reading of the body and ends when the caller
// closes it, not when RoundTrip returns. The wrapper is c itself (no
// allocation), so it may be called once per Context. A body that is also
// an io.Writer (101 Switching Protocols) stays one, as net/http requires.
func (c *Context) StopOnClose(body io.ReadCloser) io.ReadCloser {
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &stopRWBody{ReadWriteCloser: rwc, c: c}
	}
	c.body = body
	return (*stopBody)(c)
}

// stopBody is a Context seen as the body it wraps.
type stopBody Context

func (b *stopBody) Read(p []byte) (int, error) { return b.body.Read(p) }

func (b *stopBody) Close() error {
	err := b.body.Close()
	(*Context)(b).Stop()
	return err
}

type stopRWBody struct {
	io.ReadWriteCloser
	c *Context
}

func (b *stopRWBody) Close() error {
	err := b.ReadWriteCloser.Close()
	b.c.Stop()
	return err
}

var _ context.Context = (*Context)(nil)
