package redisstore_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/statetest"
	"github.com/holdfast-go/holdfast/redisstore"
)

func newAuthState(t *testing.T) authfallback.StateStore {
	c := newClient(t)
	return redisstore.NewAuthState(c, redisstore.AuthStateConfig{Prefix: newPrefix(t, c)})
}

func TestAuthStateConformance(t *testing.T) { statetest.Run(t, newAuthState) }

// TestAuthStateFleet: a replica started on an empty disk during an IdP
// outage verifies from the keys another replica shared in Redis, honours
// its grace record, and its degraded acceptances are reconciled by the
// other one (real HTTP, real Redis).
func TestAuthStateFleet(t *testing.T) { statetest.RunFleet(t, newAuthState) }
