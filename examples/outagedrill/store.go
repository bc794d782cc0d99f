package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/pgstore"
	"github.com/holdfast-go/holdfast/redisstore"
)

// openStore opens the store the holdfast replicas share: one in-process
// memory store (standing in for a shared one), or the real thing in Redis
// or PostgreSQL, under a key prefix or table of this run's own.
func openStore(ctx context.Context, o options) (idempotency.Store, func(), error) {
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	switch o.store {
	case "memory":
		s := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		return s, func() { _ = s.Close() }, nil
	case "redis":
		rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr})
		if err := rdb.Ping(ctx).Err(); err != nil {
			_ = rdb.Close()
			return nil, nil, fmt.Errorf("redis at %s: %w", o.redisAddr, err)
		}
		prefix := "holdfast-drill:" + run
		closeFn := func() {
			// Remove this run's keys.
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, pat := range []string{prefix + ":*", "{" + prefix + "}:*"} {
				iter := rdb.Scan(c, 0, pat, 500).Iterator()
				for iter.Next(c) {
					rdb.Del(c, iter.Val())
				}
			}
			_ = rdb.Close()
		}
		return redisstore.New(rdb, redisstore.Config{Prefix: prefix}), closeFn, nil
	case "postgres":
		pcfg, err := pgxpool.ParseConfig(o.pgDSN)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		// One pool stands for the replicas' pools together: give it what
		// three replicas would have (pgxpool's default is 4 connections
		// on this machine, which the fleet's requests wait for).
		pcfg.MaxConns = max(pcfg.MaxConns, 16)
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		table := "holdfast_drill_" + run
		s := pgstore.New(pool, pgstore.Config{Table: table})
		if err := s.Migrate(ctx); err != nil {
			_ = s.Close()
			pool.Close()
			return nil, nil, fmt.Errorf("postgres: creating the table: %w", err)
		}
		closeFn := func() {
			_ = s.Close()
			c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if os.Getenv("DRILL_KEEP_TABLE") == "" { // set it to inspect the table after a run
				_, _ = pool.Exec(c, "DROP TABLE IF EXISTS "+table)
			}
			pool.Close()
		}
		return s, closeFn, nil
	}
	return nil, nil, fmt.Errorf("unknown -store %q: memory, redis or postgres", o.store)
}
