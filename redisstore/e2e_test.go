package redisstore_test

import (
	"testing"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/redisstore"
)

// TestE2E runs the two-instance end-to-end checks: two clients on one
// prefix, as two processes would have.
func TestE2E(t *testing.T) {
	storetest.RunHTTP(t, func(t *testing.T) (idempotency.Store, idempotency.Store) {
		c := newClient(t)
		prefix := newPrefix(t, c)
		return redisstore.New(c, redisstore.Config{Prefix: prefix}),
			redisstore.New(newClient(t), redisstore.Config{Prefix: prefix})
	})
}
