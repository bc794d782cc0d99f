package authfallback_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/statetest"
)

func TestMemoryStateConformance(t *testing.T) {
	statetest.Run(t, func(t *testing.T) authfallback.StateStore { return authfallback.NewMemoryState() })
}

func TestMemoryStateFleet(t *testing.T) {
	statetest.RunFleet(t, func(t *testing.T) authfallback.StateStore { return authfallback.NewMemoryState() })
}
