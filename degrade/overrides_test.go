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
