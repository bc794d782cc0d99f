package pgstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tableParts checks the constructor arguments every store of this package
// takes: a pool, and a table name (if empty, def) of one or two
// ("schema.table") lower-case identifiers. It panics on a programmer's
// error, as the constructors document, and returns the name's parts.
func tableParts(pool *pgxpool.Pool, table, def string) []string {
	if pool == nil {
		panic("pgstore: nil pool")
	}
	if table == "" {
		table = def
	}
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		panic(fmt.Sprintf("pgstore: invalid table name %q", table))
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			panic(fmt.Sprintf("pgstore: invalid table name %q: want lower-case identifiers [a-z_][a-z0-9_]*, at most 48 characters", table))
		}
	}
	return parts
}

// migrate runs stmts in one transaction that holds the advisory lock
// lockID, so replicas that migrate at once do not race; what names the
// store in the error.
func migrate(ctx context.Context, pool *pgxpool.Pool, lockID int64, stmts []string, what string) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
			return err
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: migrate%s: %w", what, err)
	}
	return nil
}
