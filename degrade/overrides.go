package degrade

import (
	"context"
	"maps"
	"sync"
	"time"
)

// Overrides are the switches an operator set: the forced mode of the
// service and the forced state of dependencies. With an [OverrideStore]
// ([Config.Overrides]) they are shared by every replica.
type Overrides struct {
	// Mode is the forced mode; nil when the mode follows the dependencies.
	Mode *ModeOverride `json:"mode,omitempty"`
	// Dependencies holds the dependencies forced down or up, by name.
	Dependencies map[string]DependencyOverride `json:"dependencies,omitempty"`
}

// ModeOverride forces the service's mode ([Controller.Force]).
type ModeOverride struct {
	Mode   Mode      `json:"mode"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// DependencyOverride forces a dependency down (a kill switch: "disable
// payments") or up (ignore its failures), whatever its reports say
// ([Controller.ForceDependency]).
type DependencyOverride struct {
	Down   bool      `json:"down"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// OverrideStore keeps the [Overrides] that every replica of a service
// applies. Each replica's Controller reads it every [Config.OverridePoll]
// and writes to it when an override is set through it ([Controller.Force],
// [Controller.ForceDependency], the admin handler), so a switch flipped on
// one replica reaches all of them.
//
// The memory store ([NewMemoryOverrides]) serves one process; the
// redisstore and pgstore modules hold shared ones. Every implementation
// passes the conformance suite in degrade/overridetest. Implementations must
// be safe for concurrent use.
type OverrideStore interface {
	// Overrides returns every override set. The map of a returned value is
	// the caller's.
	Overrides(ctx context.Context) (Overrides, error)
	// SetMode sets the mode override, or removes it when o is nil.
	SetMode(ctx context.Context, o *ModeOverride) error
	// SetDependency sets the override of dependency, or removes it when o
	// is nil.
	SetDependency(ctx context.Context, dependency string, o *DependencyOverride) error
}

// MemoryOverrides is an [OverrideStore] in memory, for one process (or
// tests). It is safe for concurrent use.
type MemoryOverrides struct {
	mu   sync.Mutex
	mode *ModeOverride
	deps map[string]DependencyOverride
}

var _ OverrideStore = (*MemoryOverrides)(nil)

// NewMemoryOverrides returns an empty MemoryOverrides.
func NewMemoryOverrides() *MemoryOverrides { return &MemoryOverrides{} }

// Overrides implements [OverrideStore].
func (m *MemoryOverrides) Overrides(ctx context.Context) (Overrides, error) {
	if err := ctx.Err(); err != nil {
		return Overrides{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var o Overrides
	if m.mode != nil {
		mo := *m.mode
		o.Mode = &mo
	}
	if len(m.deps) > 0 {
		o.Dependencies = maps.Clone(m.deps)
	}
	return o, nil
}

// SetMode implements [OverrideStore].
func (m *MemoryOverrides) SetMode(ctx context.Context, o *ModeOverride) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if o == nil {
		m.mode = nil
		return nil
	}
	mo := *o
	m.mode = &mo
	return nil
}

// SetDependency implements [OverrideStore].
func (m *MemoryOverrides) SetDependency(ctx context.Context, dependency string, o *DependencyOverride) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if o == nil {
		delete(m.deps, dependency)
		return nil
	}
	if m.deps == nil {
		m.deps = make(map[string]DependencyOverride)
	}
	m.deps[dependency] = *o
	return nil
}
