package redisstore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// DPoPReplayCache is an authfallback.DPoPReplayCache on Redis, so that a
// DPoP proof accepted by one replica is refused by every other: one key
// per proof, set with NX and a TTL up to the proof's expiry. It is safe for
// concurrent use. It does not own the client.
type DPoPReplayCache struct {
	c      redis.UniversalClient
	prefix string
}

// NewDPoPReplayCache returns a DPoPReplayCache whose keys start with
// prefix + ":dpop:". If prefix is empty, "holdfast".
func NewDPoPReplayCache(client redis.UniversalClient, prefix string) *DPoPReplayCache {
	if prefix == "" {
		prefix = "holdfast"
	}
	return &DPoPReplayCache{c: client, prefix: prefix + ":dpop:"}
}

// Seen records id until expires and reports whether it was recorded
// before and has not expired (authfallback.DPoPReplayCache).
func (s *DPoPReplayCache) Seen(ctx context.Context, id string, expires time.Time) (bool, error) {
	ttl := time.Until(expires)
	if ttl < time.Millisecond {
		ttl = time.Millisecond
	}
	err := s.c.SetArgs(ctx, s.prefix+id, "1", redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, redis.Nil):
		return true, nil
	}
	return false, err
}
