package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/degrade"
)

// OverridesConfig configures an [Overrides] store.
type OverridesConfig struct {
	// Table is the table's name, optionally schema-qualified, with the same
	// rules as Config.Table. Every replica of a service uses the same table.
	// If empty, "holdfast_degrade_overrides".
	Table string
}

// Overrides is a degrade.OverrideStore on PostgreSQL: one row per
// override, the key "mode" for the forced mode and "dep:<name>" for each
// forced dependency, the value as JSON. Create the table with
// [Overrides.Migrate] or with this SQL:
//
//	CREATE TABLE holdfast_degrade_overrides (
//	    name       text PRIMARY KEY,
//	    value      jsonb NOT NULL,
//	    updated_at timestamptz NOT NULL DEFAULT now()
//	);
//
// It is safe for concurrent use.
type Overrides struct {
	pool                 *pgxpool.Pool
	table                string
	qLoad, qSet, qDelete string
}

var _ degrade.OverrideStore = (*Overrides)(nil)

// NewOverrides returns an Overrides store on cfg.Table reached through
// pool. It does not create the table: call Migrate. It panics if pool is nil
// or the table name is invalid.
func NewOverrides(pool *pgxpool.Pool, cfg OverridesConfig) *Overrides {
	parts := tableParts(pool, cfg.Table, "holdfast_degrade_overrides")
	t := strings.Join(parts, ".")
	return &Overrides{
		pool:    pool,
		table:   t,
		qLoad:   "SELECT name, value FROM " + t,
		qSet:    "INSERT INTO " + t + " (name, value, updated_at) VALUES ($1, $2, now()) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
		qDelete: "DELETE FROM " + t + " WHERE name = $1",
	}
}

// Migrate creates the table if it does not exist.
func (s *Overrides) Migrate(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.table+
		" (name text PRIMARY KEY, value jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())")
	if err != nil {
		return fmt.Errorf("pgstore: create overrides table: %w", err)
	}
	return nil
}

const (
	rowMode   = "mode"
	rowDepPre = "dep:"
)

// Overrides implements degrade.OverrideStore. A row that does not decode
// is an error rather than ignored: a replica must not silently drop an
// operator's kill switch.
func (s *Overrides) Overrides(ctx context.Context) (degrade.Overrides, error) {
	var o degrade.Overrides
	rows, err := s.pool.Query(ctx, s.qLoad)
	if err != nil {
		return o, fmt.Errorf("pgstore: read overrides: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var value []byte
		if err := rows.Scan(&name, &value); err != nil {
			return degrade.Overrides{}, fmt.Errorf("pgstore: read overrides: %w", err)
		}
		switch {
		case name == rowMode:
			var mo degrade.ModeOverride
			if err := json.Unmarshal(value, &mo); err != nil {
				return degrade.Overrides{}, fmt.Errorf("pgstore: decode mode override: %w", err)
			}
			o.Mode = &mo
		case strings.HasPrefix(name, rowDepPre):
			var do degrade.DependencyOverride
			if err := json.Unmarshal(value, &do); err != nil {
				return degrade.Overrides{}, fmt.Errorf("pgstore: decode dependency override: %w", err)
			}
			if o.Dependencies == nil {
				o.Dependencies = make(map[string]degrade.DependencyOverride)
			}
			o.Dependencies[name[len(rowDepPre):]] = do
		}
	}
	if err := rows.Err(); err != nil {
		return degrade.Overrides{}, fmt.Errorf("pgstore: read overrides: %w", err)
	}
	return o, nil
}

// SetMode implements degrade.OverrideStore.
func (s *Overrides) SetMode(ctx context.Context, o *degrade.ModeOverride) error {
	if o == nil {
		return s.del(ctx, rowMode)
	}
	return s.set(ctx, rowMode, o)
}

// SetDependency implements degrade.OverrideStore.
func (s *Overrides) SetDependency(ctx context.Context, dependency string, o *degrade.DependencyOverride) error {
	if o == nil {
		return s.del(ctx, rowDepPre+dependency)
	}
	return s.set(ctx, rowDepPre+dependency, o)
}

func (s *Overrides) set(ctx context.Context, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("pgstore: encode override: %w", err)
	}
	if _, err := s.pool.Exec(ctx, s.qSet, name, b); err != nil {
		return fmt.Errorf("pgstore: write override: %w", err)
	}
	return nil
}

func (s *Overrides) del(ctx context.Context, name string) error {
	if _, err := s.pool.Exec(ctx, s.qDelete, name); err != nil {
		return fmt.Errorf("pgstore: write override: %w", err)
	}
	return nil
}
