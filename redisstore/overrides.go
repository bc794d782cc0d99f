package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/degrade"
)

// OverridesConfig configures an [Overrides] store.
type OverridesConfig struct {
	// Key is the Redis hash that holds the overrides. Every replica of a
	// service uses the same Key; services that share one Redis use
	// different ones. If empty, "holdfast:degrade:overrides".
	Key string
}

// Overrides is a degrade.OverrideStore on Redis: one hash whose field
// "mode" holds the forced mode and "dep:<name>" each forced dependency, as
// JSON. Each change is one HSET or HDEL, and a read one HGETALL, so a
// replica polling it twice a second costs Redis next to nothing. It is safe
// for concurrent use.
type Overrides struct {
	c   redis.UniversalClient
	key string
}

var _ degrade.OverrideStore = (*Overrides)(nil)

// NewOverrides returns an Overrides store on client. It panics if client is
// nil.
func NewOverrides(client redis.UniversalClient, cfg OverridesConfig) *Overrides {
	if client == nil {
		panic("redisstore: nil client")
	}
	if cfg.Key == "" {
		cfg.Key = "holdfast:degrade:overrides"
	}
	return &Overrides{c: client, key: cfg.Key}
}

const (
	fieldMode   = "mode"
	fieldDepPre = "dep:"
)

// Overrides implements degrade.OverrideStore. A field that does not decode
// (written by something else) is an error rather than ignored: a replica
// must not silently drop an operator's kill switch.
func (s *Overrides) Overrides(ctx context.Context) (degrade.Overrides, error) {
	var o degrade.Overrides
	m, err := s.c.HGetAll(ctx, s.key).Result()
	if err != nil {
		return o, fmt.Errorf("redisstore: read overrides: %w", err)
	}
	for f, v := range m {
		switch {
		case f == fieldMode:
			var mo degrade.ModeOverride
			if err := json.Unmarshal([]byte(v), &mo); err != nil {
				return degrade.Overrides{}, fmt.Errorf("redisstore: decode mode override: %w", err)
			}
			o.Mode = &mo
		case strings.HasPrefix(f, fieldDepPre):
			var do degrade.DependencyOverride
			if err := json.Unmarshal([]byte(v), &do); err != nil {
				return degrade.Overrides{}, fmt.Errorf("redisstore: decode dependency override: %w", err)
			}
			if o.Dependencies == nil {
				o.Dependencies = make(map[string]degrade.DependencyOverride)
			}
			o.Dependencies[f[len(fieldDepPre):]] = do
		}
	}
	return o, nil
}

// SetMode implements degrade.OverrideStore.
func (s *Overrides) SetMode(ctx context.Context, o *degrade.ModeOverride) error {
	return s.set(ctx, fieldMode, o)
}

// SetDependency implements degrade.OverrideStore.
func (s *Overrides) SetDependency(ctx context.Context, dependency string, o *degrade.DependencyOverride) error {
	if o == nil {
		return s.set(ctx, fieldDepPre+dependency, nil)
	}
	return s.set(ctx, fieldDepPre+dependency, o)
}

func (s *Overrides) set(ctx context.Context, field string, v any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	if v == nil || v == (*degrade.ModeOverride)(nil) {
		err = s.c.HDel(ctx, s.key, field).Err()
	} else {
		b, merr := json.Marshal(v)
		if merr != nil {
			return fmt.Errorf("redisstore: encode override: %w", merr)
		}
		err = s.c.HSet(ctx, s.key, field, b).Err()
	}
	if err != nil {
		return fmt.Errorf("redisstore: write override: %w", err)
	}
	return nil
}
