package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/pgstore"
)

// openPostgres opens the PostgreSQL stores and creates their tables if
// needed: the idempotency table, its _auth_keys, _auth_seen and
// _auth_degraded tables (the verifiers' outage state) and its _overrides
// table.
func openPostgres(ctx context.Context, c config) (stores, func(), error) {
	pool, err := pgxpool.New(ctx, c.pgDSN)
	if err != nil {
		return stores{}, nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return stores{}, nil, fmt.Errorf("postgres: %w", err)
	}
	table := tableName(c.keyPrefix)
	store := pgstore.New(pool, pgstore.Config{Table: table})
	auth := pgstore.NewAuthState(pool, pgstore.AuthStateConfig{Table: withSuffix(table, "_auth")})
	overrides := pgstore.NewOverrides(pool, pgstore.OverridesConfig{Table: withSuffix(table, "_overrides")})
	closeFn := func() { _ = store.Close(); pool.Close() }
	for what, migrate := range map[string]func(context.Context) error{
		"idempotency": store.Migrate, "auth state": auth.Migrate, "overrides": overrides.Migrate,
	} {
		if err := migrate(ctx); err != nil {
			closeFn()
			return stores{}, nil, fmt.Errorf("postgres: creating the %s tables: %w", what, err)
		}
	}
	return stores{idem: store, auth: auth, overrides: overrides}, closeFn, nil
}

// withSuffix appends suffix to the table name, shortening the name so the
// whole stays a valid table name (48 characters at most).
func withSuffix(name, suffix string) string {
	if n := 48 - len(suffix); len(name) > n {
		name = name[:n]
	}
	return name + suffix
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
