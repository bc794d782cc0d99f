package pgstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/degrade/overridetest"
	"github.com/holdfast-go/holdfast/pgstore"
)

func newOverrides(t *testing.T, table string) *pgstore.Overrides {
	t.Helper()
	pool := newPool(t, nil)
	s := pgstore.NewOverrides(pool, pgstore.OverridesConfig{Table: table})
	require.NoError(t, s.Migrate(context.Background()))
	return s
}

func TestOverridesConformance(t *testing.T) {
	overridetest.Run(t, func(t *testing.T) (degrade.OverrideStore, func() degrade.OverrideStore) {
		table := newTable(t, newPool(t, nil))
		s := newOverrides(t, table)
		return s, func() degrade.OverrideStore { return newOverrides(t, table) } // another replica's pool
	})
}

// Issue 14 point 4: two replicas, each with its own pool, share the
// operator's switches.
func TestOverridesFleet(t *testing.T) {
	table := newTable(t, newPool(t, nil))
	overridetest.Fleet(t, newOverrides(t, table), newOverrides(t, table))
}

func TestOverridesCorruptRowIsAnError(t *testing.T) {
	pool := newPool(t, nil)
	table := newTable(t, pool)
	s := newOverrides(t, table)
	_, err := pool.Exec(context.Background(), "INSERT INTO "+table+` (name, value) VALUES ('dep:payments', '"down"')`)
	require.NoError(t, err)
	_, err = s.Overrides(context.Background())
	assert.Error(t, err, "a switch that cannot be read is not silently dropped")
	assert.Panics(t, func() { pgstore.NewOverrides(pool, pgstore.OverridesConfig{Table: "bad name"}) })
	assert.Panics(t, func() { pgstore.NewOverrides(nil, pgstore.OverridesConfig{}) })
}
