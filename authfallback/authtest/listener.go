package authtest

import (
	"net"
	"sync"
)

// switchListener is a net.Listener whose socket can be closed and reopened
// on the same address, so that a "down" server refuses connections at the
// TCP level, like a crashed IdP.
type switchListener struct {
	addr net.Addr

	mu     sync.Mutex
	inner  net.Listener // nil while down
	up     *sync.Cond   // signalled when inner is set again or l is closed
	closed bool
}

func newSwitchListener() (*switchListener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &switchListener{addr: ln.Addr(), inner: ln}
	// A sync.Cond, not a channel: SetDown may be called from inside a
	// testing/synctest bubble, and a channel made there must not be
	// received from by Accept, which runs outside it.
	l.up = sync.NewCond(&l.mu)
	return l, nil
}

func (l *switchListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		for l.inner == nil && !l.closed {
			l.up.Wait()
		}
		if l.closed {
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		inner := l.inner
		l.mu.Unlock()
		c, err := inner.Accept()
		if err == nil {
			return c, nil
		}
		l.mu.Lock()
		closed, same := l.closed, l.inner == inner
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if !same {
			continue // taken down (or down and up again) meanwhile
		}
		return nil, err
	}
}

// setDown closes the socket (down) or listens again on the same address.
func (l *switchListener) setDown(down bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	if down {
		if l.inner != nil {
			_ = l.inner.Close()
			l.inner = nil
		}
		return nil
	}
	if l.inner != nil {
		return nil
	}
	ln, err := net.Listen("tcp", l.addr.String())
	if err != nil {
		return err
	}
	l.inner = ln
	l.up.Broadcast()
	return nil
}

func (l *switchListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.up.Broadcast()
	if l.inner != nil {
		err := l.inner.Close()
		l.inner = nil
		return err
	}
	return nil
}

func (l *switchListener) Addr() net.Addr { return l.addr }
