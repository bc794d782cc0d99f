package degrade_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/degrade/overridetest"
)

func TestMemoryOverridesConformance(t *testing.T) {
	overridetest.Run(t, func(t *testing.T) (degrade.OverrideStore, func() degrade.OverrideStore) {
		s := degrade.NewMemoryOverrides()
		return s, func() degrade.OverrideStore { return s }
	})
}

// Issue 14 point 4: two replicas sharing an override store; an operator
// acts on one, the other follows within a second.
func TestFleetSharesMemoryOverrides(t *testing.T) {
	s := degrade.NewMemoryOverrides()
	overridetest.Fleet(t, s, s)
}
