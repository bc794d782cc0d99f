package authtest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
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
	ln, err := listenOutsideEphemeral()
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

// listenOutsideEphemeral listens on a loopback port below the range the
// system takes ephemeral ports from (the local ports of outgoing
// connections, and ":0" listeners): while the server is down (SetDown) its
// port is free, and a port from that range would soon be given to another
// socket of this or another process (a machine running tests makes many),
// so listening again would fail. Only a listener asking for that very port
// can take it. If no such port is free, any port.
func listenOutsideEphemeral() (net.Listener, error) {
	const low = 10000
	if high := ephemeralLow(); high-low >= 1000 {
		for range 50 {
			port := low + rand.IntN(high-low)
			if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				return ln, nil // else taken: try another
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// ephemeralLow is the first port of the system's ephemeral range: Linux's
// ip_local_port_range, else 49152 (IANA's, used by macOS, the BSDs and
// Windows).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 49152
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 49152
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 49152
	}
	return n
}
