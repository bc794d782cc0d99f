package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
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
		rdb, err := openRedis(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		// A write answered 202 during an outage is as durable as the
		// store: without persistence, a Redis restart loses it.
		if v, err := rdb.ConfigGet(ctx, "appendonly").Result(); err == nil && v["appendonly"] != "yes" {
			slog.Warn("redis runs without appendonly: queued writes (202) are lost if it restarts; set appendonly yes (appendfsync always to lose none on a crash)", "addr", c.redisAddr)
		}
		s := redisstore.New(rdb, redisstore.Config{Prefix: c.keyPrefix})
		if err := s.Load(ctx); err != nil {
			_ = rdb.Close()
			return nil, nil, err
		}
		return s, func() { _ = rdb.Close() }, nil
	case "postgres":
		return openPostgres(ctx, c)
	}
	return nil, nil, fmt.Errorf("unknown -store %q: memory, redis or postgres", c.store)
}

// openOverrides opens the store of the operators' overrides (a mode or a
// dependency forced through the admin listener) on the backend -store
// names, so that an override set on one replica reaches every replica
// (degrade.Config.Overrides). With -store memory it returns nil: the
// override holds on this replica only.
func openOverrides(ctx context.Context, c config) (degrade.OverrideStore, func(), error) {
	switch c.store {
	case "redis":
		rdb, err := openRedis(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		return redisstore.NewOverrides(rdb, redisstore.OverridesConfig{Key: c.keyPrefix + ":overrides"}), func() { _ = rdb.Close() }, nil
	case "postgres":
		return openPostgresOverrides(ctx, c)
	}
	return nil, func() {}, nil
}

// openAuthState opens the verifiers' shared outage state (the key set, the
// tokens seen valid, the degraded acceptances: authfallback.Config.State)
// on the backend -store names, so that a replica started on an empty disk
// during an IdP outage verifies with the keys another replica fetched, and
// a token one replica saw valid keeps its grace window on every replica.
// With -store memory it returns nil: each instance keeps its own.
func openAuthState(ctx context.Context, c config) (authfallback.StateStore, func(), error) {
	switch c.store {
	case "redis":
		rdb, err := openRedis(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		return redisstore.NewAuthState(rdb, redisstore.AuthStateConfig{Prefix: c.keyPrefix + ":auth"}), func() { _ = rdb.Close() }, nil
	case "postgres":
		return openPostgresAuthState(ctx, c)
	}
	return nil, func() {}, nil
}

// openRedis connects to -redis-addr: one address is a single server,
// several (comma-separated) a Redis Cluster's seed nodes.
func openRedis(ctx context.Context, c config) (redis.UniversalClient, error) {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(c.redisAddr, ",")})
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", c.redisAddr, err)
	}
	return rdb, nil
}
