package main

import (
	holdfastotel "github.com/holdfast-go/holdfast/otel"

	"github.com/holdfast-go/holdfast/examples/internal/stack"
)

// Hooks plugs the Instrumentation's hook methods into the example
// service's hooks. A service wired by hand calls inst.Instrument on its
// configs instead (see the README).
func Hooks(inst *holdfastotel.Instrumentation) stack.Hooks {
	return stack.Hooks{
		OnVerify:        inst.OnVerify,
		OnFallbackEnter: inst.OnFallbackEnter,
		OnFallbackExit:  inst.OnFallbackExit,
		OnRefreshError:  inst.OnRefreshError,
		OnRevocation:    inst.OnRevocation,
		OnReconcile:     inst.OnReconcile,
		OnOfflineIssue:  inst.OnOfflineIssue,
		OnGate:          inst.OnGate,
		OnModeChange:    inst.OnModeChange,
		OnStale:         inst.OnStale,
		OnRetry:         inst.OnRetry,
		OnGiveUp:        inst.OnGiveUp,
		OnCall:          inst.OnCall,
		OnStateChange:   inst.OnStateChange,
		OnOutcome:       inst.OnOutcome,
	}
}
