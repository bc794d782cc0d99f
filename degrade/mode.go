package degrade

import (
	"fmt"
	"net/http"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// HeaderDegraded is the response header, "Holdfast-Degraded", that holdfast
// sets on a response served by a fallback or in a non-normal mode. Its value is a
// short reason: the mode ("degraded", "read-only"), "stale-if-error", or
// authfallback's reason ("jwks-unreachable", "offline-token", ...).
const HeaderDegraded = httpx.HeaderDegraded

// AddDegradedReason adds reason to the Holdfast-Degraded list of h (one
// comma-separated value), after the reasons already there, which it keeps,
// and only if not listed yet. A handler that relays a downstream response
// marked degraded uses it, so that the reasons the gate and authentication
// set on the way in are not lost.
func AddDegradedReason(h http.Header, reason string) { httpx.AddDegraded(h, reason) }

// Mode is the operating mode of a service. Modes are ordered: a worse mode
// has a larger value, and when several signals disagree the worst wins.
type Mode int32

const (
	// Normal: every request passes.
	Normal Mode = iota
	// Degraded: reads pass, queueable writes are queued (or pass), critical
	// writes are refused.
	Degraded
	// ReadOnly: reads pass, every write is queued or refused.
	ReadOnly
)

// String returns "normal", "degraded" or "read-only".
func (m Mode) String() string {
	switch m {
	case Normal:
		return "normal"
	case Degraded:
		return "degraded"
	case ReadOnly:
		return "read-only"
	}
	return fmt.Sprintf("mode(%d)", int32(m))
}

// MarshalText encodes m as its String form.
func (m Mode) MarshalText() ([]byte, error) {
	if !m.valid() {
		return nil, fmt.Errorf("degrade: invalid mode %d", int32(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText parses "normal", "degraded" or "read-only" (also
// "readonly" and "read_only").
func (m *Mode) UnmarshalText(b []byte) error {
	v, ok := parseMode(string(b))
	if !ok {
		return fmt.Errorf("degrade: unknown mode %q", truncate(string(b), 32))
	}
	*m = v
	return nil
}

func (m Mode) valid() bool { return m >= Normal && m <= ReadOnly }

func parseMode(s string) (Mode, bool) {
	switch s {
	case "normal":
		return Normal, true
	case "degraded":
		return Degraded, true
	case "read-only", "readonly", "read_only":
		return ReadOnly, true
	}
	return 0, false
}

// Tier is the risk tier of a request, which decides how the gate
// ([Controller.Handler]) treats it outside Normal mode.
type Tier int

const (
	// Read is a request without side effects. Reads pass in every mode.
	Read Tier = iota
	// Write is a write that can wait: in Degraded mode it goes to
	// [Config.Queue] when one is set and passes otherwise; in ReadOnly mode
	// it goes to the queue or is refused.
	Write
	// Critical is a write that needs the service at full strength (payments,
	// permission changes, anything that needs fresh proof of identity). It is
	// refused in Degraded and ReadOnly mode.
	Critical
)

// String returns "read", "write" or "critical".
func (t Tier) String() string {
	switch t {
	case Read:
		return "read"
	case Write:
		return "write"
	case Critical:
		return "critical"
	}
	return fmt.Sprintf("tier(%d)", int(t))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
