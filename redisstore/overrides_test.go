package redisstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/degrade/overridetest"
	"github.com/holdfast-go/holdfast/redisstore"
)

func TestOverridesConformance(t *testing.T) {
	overridetest.Run(t, func(t *testing.T) (degrade.OverrideStore, func() degrade.OverrideStore) {
		c := newClient(t)
		key := newPrefix(t, c) + ":overrides"
		open := func() degrade.OverrideStore {
			c2 := newClient(t) // another replica's connection
			return redisstore.NewOverrides(c2, redisstore.OverridesConfig{Key: key})
		}
		return redisstore.NewOverrides(c, redisstore.OverridesConfig{Key: key}), open
	})
}

// Issue 14 point 4: two replicas, each with its own Redis connection,
// share the operator's switches.
func TestOverridesFleet(t *testing.T) {
	c1, c2 := newClient(t), newClient(t)
	key := newPrefix(t, c1) + ":overrides"
	overridetest.Fleet(t,
		redisstore.NewOverrides(c1, redisstore.OverridesConfig{Key: key}),
		redisstore.NewOverrides(c2, redisstore.OverridesConfig{Key: key}))
}

func TestOverridesCorruptFieldIsAnError(t *testing.T) {
	c := newClient(t)
	key := newPrefix(t, c) + ":overrides"
	require.NoError(t, c.HSet(context.Background(), key, "dep:payments", "{not json").Err())
	_, err := redisstore.NewOverrides(c, redisstore.OverridesConfig{Key: key}).Overrides(context.Background())
	assert.Error(t, err, "a switch that cannot be read is not silently dropped")
	assert.Panics(t, func() { redisstore.NewOverrides(nil, redisstore.OverridesConfig{}) })
}
