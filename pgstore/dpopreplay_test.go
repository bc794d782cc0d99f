package pgstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/pgstore"
)

var _ authfallback.DPoPReplayCache = (*pgstore.DPoPReplayCache)(nil)

func TestDPoPReplayCacheConformance(t *testing.T) {
	pool := newPool(t, nil)
	authtest.RunDPoPReplayCache(t, func(t *testing.T) authtest.DPoPReplayCache {
		c := pgstore.NewDPoPReplayCache(pool, newTable(t, pool))
		require.NoError(t, c.Migrate(context.Background()))
		return c
	})
	c := pgstore.NewDPoPReplayCache(pool, newTable(t, pool))
	require.NoError(t, c.Migrate(context.Background()))
	require.NoError(t, c.Sweep(context.Background()))
	require.Panics(t, func() { pgstore.NewDPoPReplayCache(pool, "Bad-Name") })
}
