package pgstore_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/statetest"
	"github.com/holdfast-go/holdfast/pgstore"
)

func newAuthState(t *testing.T, pool *pgxpool.Pool) *pgstore.AuthState {
	table := newTable(t, pool)
	t.Cleanup(func() {
		for _, suffix := range []string{"_keys", "_seen", "_degraded"} {
			_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table+suffix)
		}
	})
	s := pgstore.NewAuthState(pool, pgstore.AuthStateConfig{Table: table})
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

func TestAuthStateConformance(t *testing.T) {
	pool := newPool(t, nil)
	statetest.Run(t, func(t *testing.T) authfallback.StateStore { return newAuthState(t, pool) })
}

// TestAuthStateFleet: a replica started on an empty disk during an IdP
// outage verifies from the keys another replica shared in PostgreSQL,
// honours its grace record, and its degraded acceptances are reconciled by
// the other one (real HTTP, real PostgreSQL).
func TestAuthStateFleet(t *testing.T) {
	pool := newPool(t, nil)
	statetest.RunFleet(t, func(t *testing.T) authfallback.StateStore { return newAuthState(t, pool) })
}

func TestAuthStateMigrateTwiceAndSweep(t *testing.T) {
	pool := newPool(t, nil)
	s := newAuthState(t, pool)
	require.NoError(t, s.Migrate(context.Background()))
	require.NoError(t, s.Sweep(context.Background()))
	require.Panics(t, func() { pgstore.NewAuthState(pool, pgstore.AuthStateConfig{Table: "Bad-Name"}) })
}
