package main

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/redisstore"
)

// openStore opens the idempotency store -store names. Redis and PostgreSQL
// share the records (and the queue of writes taken during an outage) between
// replicas and across restarts; the memory store is for one instance.
func openStore(ctx context.Context, c config) (idempotency.Store, func(), error) {
	switch c.store {
	case "memory":
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		return s, func() { _ = s.Close() }, nil
	case "redis":
		rdb := redis.NewClient(&redis.Options{Addr: c.redisAddr})
		if err := rdb.Ping(ctx).Err(); err != nil {
			_ = rdb.Close()
			return nil, nil, fmt.Errorf("redis at %s: %w", c.redisAddr, err)
		}
		return redisstore.New(rdb, redisstore.Config{Prefix: c.keyPrefix}), func() { _ = rdb.Close() }, nil
	case "postgres":
		return openPostgres(ctx, c)
	}
	return nil, nil, fmt.Errorf("unknown -store %q: memory, redis or postgres", c.store)
}
