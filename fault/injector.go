package fault

import (
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/holdfast-go/holdfast/internal/problem"
)

// Problem is the problem details type of WriteProblem (internal/problem).
type Problem = problem.Problem

// Problem type slugs the package writes.
const (
	// ProblemInjected: the answer of a Status fault.
	ProblemInjected = "injected-fault"
	// ProblemBadAdminRequest: the admin handler refused a request.
	ProblemBadAdminRequest = "bad-admin-request"
)

// Sides of an [Event].
const (
	SideClient = "client"
	SideServer = "server"
)

// Config configures an [Injector]. The zero value is usable.
type Config struct {
	// Rand returns a number in [0, 1) that decides whether a fault whose
	// Rate is below 1 applies to a request. If nil, math/rand/v2.Float64.
	// It may be called concurrently.
	Rand func() float64
	// WriteProblem writes the answer of a Status fault (server side) and
	// the admin handler's refusals. If nil, p is written as RFC 9457
	// application/problem+json.
	WriteProblem func(w http.ResponseWriter, r *http.Request, p Problem)
	// OnInject, if not nil, is called for every request a fault applies
	// to, before the fault acts. It may be called concurrently and must
	// not block.
	OnInject func(Event)
	// OnChange, if not nil, is called after a fault was set or cleared.
	// It may be called concurrently and must not block.
	OnChange func(ChangeEvent)
	// Logger receives every change of the faults (Info). If nil, nothing
	// is logged.
	Logger *slog.Logger
}

// ChangeEvent describes a fault set or cleared.
type ChangeEvent struct {
	Dependency string
	// Fault is the fault now in force; its zero value when Set is false.
	Fault Fault
	// Set is true when a fault was set, false when it was cleared.
	Set bool
}

// Event describes one request a fault applied to.
type Event struct {
	Dependency string
	Kind       Kind
	// Side is SideClient (Transport) or SideServer (Handler).
	Side   string
	Method string
	Path   string
}

// Injector holds the faults in force, one per dependency name. It is safe
// for concurrent use. Build it with [New].
type Injector struct {
	cfg    Config
	mu     sync.Mutex // serialises writers of faults
	faults atomic.Pointer[map[string]Fault]
}

// New returns an Injector with no fault set. It copies cfg.
func New(cfg Config) *Injector {
	in := &Injector{cfg: cfg}
	m := map[string]Fault{}
	in.faults.Store(&m)
	return in
}

// Set puts f in force for dependency, replacing the fault set before. It
// fails if the name is not a token of at most MaxDependencyLength bytes
// (letters, digits, "-", "_", "." and the like) or f is invalid
// ([Fault.Validate]).
func (in *Injector) Set(dependency string, f Fault) error {
	if !validToken(dependency, MaxDependencyLength) {
		return fmt.Errorf("fault: invalid dependency name %q", dependency)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	f.Methods = append([]string(nil), f.Methods...)
	in.update(func(m map[string]Fault) { m[dependency] = f })
	in.changed(dependency, f, true)
	return nil
}

// Clear removes the fault of dependency, if any.
func (in *Injector) Clear(dependency string) {
	if _, ok := in.Fault(dependency); !ok {
		return
	}
	in.update(func(m map[string]Fault) { delete(m, dependency) })
	in.changed(dependency, Fault{}, false)
}

// ClearAll removes every fault.
func (in *Injector) ClearAll() {
	for dep := range in.Faults() {
		in.Clear(dep)
	}
}

// Fault returns the fault in force for dependency.
func (in *Injector) Fault(dependency string) (Fault, bool) {
	f, ok := (*in.faults.Load())[dependency]
	return f, ok
}

// Faults returns a copy of the faults in force.
func (in *Injector) Faults() map[string]Fault {
	return maps.Clone(*in.faults.Load())
}

func (in *Injector) update(fn func(map[string]Fault)) {
	in.mu.Lock()
	m := maps.Clone(*in.faults.Load())
	fn(m)
	in.faults.Store(&m)
	in.mu.Unlock()
}

func (in *Injector) changed(dep string, f Fault, ok bool) {
	if l := in.cfg.Logger; l != nil {
		if ok {
			l.Info("fault: set", slog.String("dependency", dep), slog.String("fault", f.String()))
		} else {
			l.Info("fault: cleared", slog.String("dependency", dep))
		}
	}
	if in.cfg.OnChange != nil {
		in.cfg.OnChange(ChangeEvent{Dependency: dep, Fault: f, Set: ok})
	}
}

// pick returns the fault that applies to a request, if any.
func (in *Injector) pick(dep, side string, r *http.Request) (Fault, bool) {
	f, ok := (*in.faults.Load())[dep]
	if !ok || !f.matches(r.Method) {
		return Fault{}, false
	}
	if rate := f.rate(); rate < 1 {
		rnd := rand.Float64
		if in.cfg.Rand != nil {
			rnd = in.cfg.Rand
		}
		if rnd() >= rate {
			return Fault{}, false
		}
	}
	if in.cfg.OnInject != nil {
		in.cfg.OnInject(Event{Dependency: dep, Kind: f.Kind, Side: side, Method: r.Method, Path: r.URL.Path})
	}
	return f, true
}
