package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/pgstore"
	"github.com/holdfast-go/holdfast/redisstore"
)

// shared is what the holdfast replicas of the fleet share: one instance of
// each for every replica.
type shared struct {
	// store keeps the idempotency records and the queued writes.
	store idempotency.Store
	// auth is the verifiers' outage state: key set, tokens seen valid,
	// degraded acceptances.
	auth authfallback.StateStore
	// overrides are the operator's switches.
	overrides degrade.OverrideStore
}

// openStore opens the state the holdfast replicas share: in-process memory
// stores (standing in for shared ones), or the real thing in Redis or
// PostgreSQL, under a key prefix or tables of this run's own.
func openStore(ctx context.Context, o options) (shared, func(), error) {
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	switch o.store {
	case "memory":
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		return shared{store: s, auth: authfallback.NewMemoryState(), overrides: degrade.NewMemoryOverrides()},
			func() { _ = s.Close() }, nil
	case "redis":
		rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr})
		if err := rdb.Ping(ctx).Err(); err != nil {
			_ = rdb.Close()
			return shared{}, nil, fmt.Errorf("redis at %s: %w", o.redisAddr, err)
		}
		prefix := "holdfast-drill:" + run
		closeFn := func() {
			// Remove this run's keys.
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// The idempotency store's keys, and the auth state's (whose
			// keys of one issuer share the hash tag {prefix:auth:<issuer>}).
			for _, pat := range []string{prefix + ":*", "{" + prefix + "}:*", "{" + prefix + ":*"} {
				iter := rdb.Scan(c, 0, pat, 500).Iterator()
				for iter.Next(c) {
					rdb.Del(c, iter.Val())
				}
			}
			_ = rdb.Close()
		}
		return shared{
			store:     redisstore.New(rdb, redisstore.Config{Prefix: prefix}),
			auth:      redisstore.NewAuthState(rdb, redisstore.AuthStateConfig{Prefix: prefix + ":auth"}),
			overrides: redisstore.NewOverrides(rdb, redisstore.OverridesConfig{Key: prefix + ":overrides"}),
		}, closeFn, nil
	case "postgres":
		pcfg, err := pgxpool.ParseConfig(o.pgDSN)
		if err != nil {
			return shared{}, nil, fmt.Errorf("postgres: %w", err)
		}
		// One pool stands for the replicas' pools together: give it what
		// three replicas would have (pgxpool's default is 4 connections
		// on this machine, which the fleet's requests wait for).
		pcfg.MaxConns = max(pcfg.MaxConns, 16)
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return shared{}, nil, fmt.Errorf("postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return shared{}, nil, fmt.Errorf("postgres: %w", err)
		}
		table := "holdfast_drill_" + run
		s := pgstore.New(pool, pgstore.Config{Table: table})
		if err := s.Migrate(ctx); err != nil {
			_ = s.Close()
			pool.Close()
			return shared{}, nil, fmt.Errorf("postgres: creating the table: %w", err)
		}
		auth := pgstore.NewAuthState(pool, pgstore.AuthStateConfig{Table: table + "_auth"})
		ovr := pgstore.NewOverrides(pool, pgstore.OverridesConfig{Table: table + "_overrides"})
		tables := []string{table, table + "_auth_keys", table + "_auth_seen", table + "_auth_degraded", table + "_overrides"}
		closeFn := func() {
			_ = s.Close()
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if os.Getenv("DRILL_KEEP_TABLE") == "" { // set it to inspect the tables after a run
				for _, t := range tables {
					_, _ = pool.Exec(c, "DROP TABLE IF EXISTS "+t)
				}
			}
			pool.Close()
		}
		if err := auth.Migrate(ctx); err != nil {
			closeFn()
			return shared{}, nil, fmt.Errorf("postgres: creating the auth state tables: %w", err)
		}
		if err := ovr.Migrate(ctx); err != nil {
			closeFn()
			return shared{}, nil, fmt.Errorf("postgres: creating the overrides table: %w", err)
		}
		return shared{store: s, auth: auth, overrides: ovr}, closeFn, nil
	}
	return shared{}, nil, fmt.Errorf("unknown -store %q: memory, redis or postgres", o.store)
}
