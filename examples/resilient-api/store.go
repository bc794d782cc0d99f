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

// stores are what the replicas of the service share.
type stores struct {
	// idem keeps the idempotency records and the queued writes.
	idem idempotency.Store
	// auth is the verifiers' outage state (key set, tokens seen valid,
	// degraded acceptances); nil: each instance keeps its own.
	auth authfallback.StateStore
	// overrides are the operator's switches; nil: each instance its own.
	overrides degrade.OverrideStore
}

// openStore opens the stores -store names. Redis and PostgreSQL share, between
// replicas and across restarts, the idempotency records (and the queue of
// writes taken during an outage), the verifiers' outage state (a replica
// started on an empty disk during an IdP outage verifies with the keys
// another fetched, and a token one replica saw valid keeps its grace window
// on every replica) and the operator's overrides (a mode forced through one
// replica's admin listener holds on every replica); the memory store is for
// one instance.
func openStore(ctx context.Context, c config) (stores, func(), error) {
	switch c.store {
	case "memory":
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		return stores{idem: s}, func() { _ = s.Close() }, nil
	case "redis":
		// One address: a single server; several (comma-separated): a
		// Redis Cluster's seed nodes.
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(c.redisAddr, ",")})
		if err := rdb.Ping(ctx).Err(); err != nil {
			_ = rdb.Close()
			return stores{}, nil, fmt.Errorf("redis at %s: %w", c.redisAddr, err)
		}
		// A write answered 202 during an outage is as durable as the
		// store: without persistence, a Redis restart loses it.
		if v, err := rdb.ConfigGet(ctx, "appendonly").Result(); err == nil && v["appendonly"] != "yes" {
			slog.Warn("redis runs without appendonly: queued writes (202) are lost if it restarts; set appendonly yes (appendfsync always to lose none on a crash)", "addr", c.redisAddr)
		}
		s := redisstore.New(rdb, redisstore.Config{Prefix: c.keyPrefix})
		if err := s.Load(ctx); err != nil {
			_ = rdb.Close()
			return stores{}, nil, err
		}
		return stores{
			idem:      s,
			auth:      redisstore.NewAuthState(rdb, redisstore.AuthStateConfig{Prefix: c.keyPrefix + ":auth"}),
			overrides: redisstore.NewOverrides(rdb, redisstore.OverridesConfig{Key: c.keyPrefix + ":overrides"}),
		}, func() { _ = rdb.Close() }, nil
	case "postgres":
		return openPostgres(ctx, c)
	}
	return stores{}, nil, fmt.Errorf("unknown -store %q: memory, redis or postgres", c.store)
}
