package pgstore_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/pgstore"
)

// TestE2E runs the two-instance end-to-end checks: two pools on one table,
// as two processes would have.
func TestE2E(t *testing.T) {
	storetest.RunHTTP(t, func(t *testing.T) (idempotency.Store, idempotency.Store) {
		pool := newPool(t, nil)
		table := newTable(t, pool)
		return newStore(t, pool, pgstore.Config{Table: table}),
			newStore(t, newPool(t, nil), pgstore.Config{Table: table})
	})
}
