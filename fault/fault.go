package fault

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrInjected is matched (errors.Is) by every error a fault causes on the
// client side: Error, Outage (which also matches syscall.ECONNREFUSED) and a
// Hang that outlasted Fault.MaxHang.
var ErrInjected = errors.New("fault: injected")

// Kind is what a [Fault] does to a request.
type Kind string

// Kinds of faults. See the package documentation for what each does on the
// client and on the server side.
const (
	Latency Kind = "latency"
	Status  Kind = "status"
	Error   Kind = "error"
	Outage  Kind = "outage"
	Hang    Kind = "hang"
)

// Limits of a [Fault].
const (
	// MaxDelay bounds Fault.Latency and Fault.MaxHang.
	MaxDelay = time.Hour
	// MaxDependencyLength bounds a dependency name.
	MaxDependencyLength = 64
	// MaxMethods bounds the length of Fault.Methods.
	MaxMethods = 16
)

func (k Kind) valid() bool {
	switch k {
	case Latency, Status, Error, Outage, Hang:
		return true
	}
	return false
}

// Fault is what an [Injector] does to the requests of one dependency. Its
// zero value is not a fault: Kind is required.
type Fault struct {
	// Kind is what the fault does. Required.
	Kind Kind
	// Rate is the share of requests the fault applies to, within [0, 1].
	// If zero, 1: every request.
	Rate float64
	// Latency delays each affected request before Kind applies (for the
	// Latency kind, the only effect). If zero, no delay. At most MaxDelay.
	Latency time.Duration
	// Status is the status code the Status kind answers, 100 to 599. If
	// zero, 503.
	Status int
	// RetryAfter, if positive, is sent as Retry-After with Status.
	RetryAfter time.Duration
	// MaxHang bounds how long Hang withholds an answer. Then the client
	// side fails with ErrInjected and the server side closes the
	// connection without an answer. If zero, until the caller gives up
	// (its context ends, or it closes the connection). At most MaxDelay.
	MaxHang time.Duration
	// Methods, if not empty, limits the fault to these methods (e.g. only
	// POST, to make writes hang and reads pass).
	Methods []string
}

// Validate reports whether f is a fault an [Injector] accepts.
func (f Fault) Validate() error {
	if !f.Kind.valid() {
		return fmt.Errorf("fault: unknown kind %q (latency, status, error, outage, hang)", f.Kind)
	}
	if !(f.Rate >= 0 && f.Rate <= 1) { // also refuses NaN
		return fmt.Errorf("fault: rate %v outside [0, 1]", f.Rate)
	}
	for _, d := range []time.Duration{f.Latency, f.MaxHang, f.RetryAfter} {
		if d < 0 || d > MaxDelay {
			return fmt.Errorf("fault: duration %v outside [0, %v]", d, MaxDelay)
		}
	}
	if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
		return fmt.Errorf("fault: status %d outside [100, 599]", f.Status)
	}
	if len(f.Methods) > MaxMethods {
		return fmt.Errorf("fault: more than %d methods", MaxMethods)
	}
	for _, m := range f.Methods {
		if !validToken(m, 20) {
			return fmt.Errorf("fault: invalid method %q", m)
		}
	}
	return nil
}

func (f Fault) status() int {
	if f.Status != 0 {
		return f.Status
	}
	return http.StatusServiceUnavailable
}

func (f Fault) rate() float64 {
	if f.Rate == 0 {
		return 1
	}
	return f.Rate
}

func (f Fault) matches(method string) bool {
	if len(f.Methods) == 0 {
		return true
	}
	for _, m := range f.Methods {
		if strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}

// String describes f in one line, e.g. "hang POST at 50 % (latency 200ms)".
func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(string(f.Kind))
	if f.Kind == Status {
		fmt.Fprintf(&b, " %d", f.status())
	}
	if len(f.Methods) > 0 {
		b.WriteString(" " + strings.Join(f.Methods, ","))
	}
	if r := f.rate(); r < 1 {
		fmt.Fprintf(&b, " at %g %%", r*100)
	}
	if f.Latency > 0 && f.Kind != Latency {
		fmt.Fprintf(&b, " (latency %v)", f.Latency)
	} else if f.Kind == Latency {
		fmt.Fprintf(&b, " %v", f.Latency)
	}
	if f.MaxHang > 0 {
		fmt.Fprintf(&b, " (max %v)", f.MaxHang)
	}
	return b.String()
}

// validToken reports whether s is a non-empty RFC 9110 token of at most max
// bytes: what a method and a dependency name may be.
func validToken(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// faultJSON is the JSON form of a Fault: durations as Go duration strings.
type faultJSON struct {
	Kind       Kind     `json:"kind"`
	Rate       float64  `json:"rate,omitempty"`
	Latency    string   `json:"latency,omitempty"`
	Status     int      `json:"status,omitempty"`
	RetryAfter string   `json:"retry_after,omitempty"`
	MaxHang    string   `json:"max_hang,omitempty"`
	Methods    []string `json:"methods,omitempty"`
}

// MarshalJSON writes f as {"kind": "hang", "rate": 0.5, "latency": "200ms",
// "status": 503, "retry_after": "1s", "max_hang": "10s", "methods": ["POST"]},
// leaving out zero members.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Kind: f.Kind, Rate: f.Rate, Status: f.Status, Methods: f.Methods}
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	j.Latency, j.RetryAfter, j.MaxHang = dur(f.Latency), dur(f.RetryAfter), dur(f.MaxHang)
	return json.Marshal(j)
}

// UnmarshalJSON reads the form MarshalJSON writes. Durations are Go
// duration strings ("250ms", "2s"). It does not validate: see Validate.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Fault{Kind: j.Kind, Rate: j.Rate, Status: j.Status, Methods: j.Methods}
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{j.Latency, &out.Latency}, {j.RetryAfter, &out.RetryAfter}, {j.MaxHang, &out.MaxHang}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("fault: %w", err)
		}
		*d.dst = v
	}
	*f = out
	return nil
}
