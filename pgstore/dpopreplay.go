package pgstore

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DPoPReplayCache is an authfallback.DPoPReplayCache on a PostgreSQL table
// (id text primary key, expires timestamptz), so that a DPoP proof accepted
// by one replica is refused by every other. Expired rows are deleted now
// and then by Seen itself (one call in 1024) and by Sweep. It is safe for
// concurrent use; it does not own the pool.
type DPoPReplayCache struct {
	pool                  *pgxpool.Pool
	create, insert, sweep string
	calls                 atomic.Uint64
}

// NewDPoPReplayCache returns a DPoPReplayCache on table (optionally
// schema-qualified, lower-case identifiers as for Config.Table; if empty,
// "holdfast_dpop_replay"). It does not create the table: call Migrate. It
// panics if pool is nil or the table name is invalid.
func NewDPoPReplayCache(pool *pgxpool.Pool, table string) *DPoPReplayCache {
	parts := tableParts(pool, table, "holdfast_dpop_replay")
	t := pgx.Identifier(parts).Sanitize()
	return &DPoPReplayCache{
		pool:   pool,
		create: `CREATE TABLE IF NOT EXISTS ` + t + ` (id text PRIMARY KEY, expires timestamptz NOT NULL)`,
		insert: `INSERT INTO ` + t + ` AS t (id, expires) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET expires = EXCLUDED.expires WHERE t.expires <= $3 RETURNING 1`,
		sweep: `DELETE FROM ` + t + ` WHERE expires <= $1`,
	}
}

// Migrate creates the table if it does not exist.
func (c *DPoPReplayCache) Migrate(ctx context.Context) error {
	_, err := c.pool.Exec(ctx, c.create)
	return err
}

// Seen records id until expires and reports whether it was recorded
// before and has not expired (authfallback.DPoPReplayCache).
func (c *DPoPReplayCache) Seen(ctx context.Context, id string, expires time.Time) (bool, error) {
	now := time.Now()
	if c.calls.Add(1)%1024 == 0 {
		_ = c.Sweep(ctx)
	}
	var one int
	err := c.pool.QueryRow(ctx, c.insert, id, expires, now).Scan(&one)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, pgx.ErrNoRows):
		return true, nil
	}
	return false, err
}

// Sweep deletes the expired rows.
func (c *DPoPReplayCache) Sweep(ctx context.Context) error {
	_, err := c.pool.Exec(ctx, c.sweep, time.Now())
	return err
}
