package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/degrade"
	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/pgstore"
)

// openPostgres opens the PostgreSQL store and creates its table if needed.
func openPostgres(ctx context.Context, c config) (idempotency.Store, func(), error) {
	pool, err := pgxpool.New(ctx, c.pgDSN)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	store := pgstore.New(pool, pgstore.Config{Table: tableName(c.keyPrefix)})
	if err := store.Migrate(ctx); err != nil {
		_ = store.Close()
		pool.Close()
		return nil, nil, fmt.Errorf("postgres: creating the table: %w", err)
	}
	return store, func() { _ = store.Close(); pool.Close() }, nil
}

// tableName turns the store prefix into a plain SQL identifier.
func tableName(prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9' && b.Len() > 0, r == '_':
			b.WriteRune(r)
		case r == '-' || r == '.' || r == ':':
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 48 {
		name = name[:48]
	}
	if name == "" {
		return "idempotency"
	}
	return name
}

// openPostgresOverrides opens the overrides table beside the store's and
// creates it if needed.
func openPostgresOverrides(ctx context.Context, c config) (degrade.OverrideStore, func(), error) {
	pool, err := pgxpool.New(ctx, c.pgDSN)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	o := pgstore.NewOverrides(pool, pgstore.OverridesConfig{Table: tableName(c.keyPrefix) + "_overrides"})
	if err := o.Migrate(ctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("postgres: creating the overrides table: %w", err)
	}
	return o, pool.Close, nil
}

// openPostgresAuthState opens the auth state tables (_auth_keys,
// _auth_seen, _auth_degraded beside the store's) and creates them if
// needed.
func openPostgresAuthState(ctx context.Context, c config) (authfallback.StateStore, func(), error) {
	pool, err := pgxpool.New(ctx, c.pgDSN)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	s := pgstore.NewAuthState(pool, pgstore.AuthStateConfig{Table: withSuffix(tableName(c.keyPrefix), "_auth")})
	if err := s.Migrate(ctx); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("postgres: creating the auth state tables: %w", err)
	}
	return s, pool.Close, nil
}

// withSuffix appends suffix to the table name, shortening the name so the
// whole stays a valid table name (48 characters at most).
func withSuffix(name, suffix string) string {
	if n := 48 - len(suffix); len(name) > n {
		name = name[:n]
	}
	return name + suffix
}
