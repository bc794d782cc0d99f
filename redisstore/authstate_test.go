package redisstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback"
	"github.com/holdfast-go/holdfast/authfallback/statetest"
	"github.com/holdfast-go/holdfast/redisstore"
)

func newAuthState(t *testing.T) authfallback.StateStore {
	c := newClient(t)
	prefix := newPrefix(t, c)
	t.Cleanup(func() {
		// The keys of an issuer carry the hash tag {prefix:issuer}.
		ctx := context.Background()
		iter := c.Scan(ctx, 0, "{"+prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return redisstore.NewAuthState(c, redisstore.AuthStateConfig{Prefix: prefix})
}

// TestAuthStateKeys: the layout of the package doc (what an operator
// inspects), and expiry of the records.
func TestAuthStateKeys(t *testing.T) {
	c := newClient(t)
	prefix := newPrefix(t, c)
	s := redisstore.NewAuthState(c, redisstore.AuthStateConfig{Prefix: prefix})
	ctx := context.Background()
	now := time.Now()
	_, err := s.SaveKeys(ctx, authfallback.KeySetRecord{Issuer: "https://idp.test/", FetchedAt: now, Doc: []byte("{}")})
	require.NoError(t, err)
	require.NoError(t, s.AddSeen(ctx, []authfallback.SeenToken{{TokenHash: "h1", Issuer: "i", SeenAt: now, ExpiresAt: now, Expires: now.Add(time.Minute)}}))
	require.NoError(t, s.AddDegraded(ctx, []authfallback.DegradedAcceptance{{Issuer: "https://idp.test/", TokenHash: "h2", Count: 1,
		FirstAccepted: now, LastAccepted: now, Expires: now.Add(time.Hour)}}))
	var keys []string
	for _, pattern := range []string{prefix + ":*", "{" + prefix + ":*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
	}
	t.Cleanup(func() { c.Del(context.Background(), keys...) })
	require.Len(t, keys, 4, "%v", keys)
	for _, k := range keys {
		ttl := c.PTTL(ctx, k).Val()
		switch {
		case strings.HasSuffix(k, ":keys"):
			assert.Equal(t, time.Duration(-1), ttl, "the key set never expires: %s", k)
		case strings.HasSuffix(k, ":seen:h1"):
			assert.InDelta(t, float64(time.Minute), float64(ttl), float64(5*time.Second), k)
		default:
			assert.InDelta(t, float64(time.Hour), float64(ttl), float64(5*time.Second), k)
		}
	}
	assert.Panics(t, func() { redisstore.NewAuthState(c, redisstore.AuthStateConfig{Prefix: "a{b}"}) })
	assert.Panics(t, func() { redisstore.NewAuthState(nil, redisstore.AuthStateConfig{}) })
	require.NoError(t, s.Load(ctx))
}

func TestAuthStateConformance(t *testing.T) { statetest.Run(t, newAuthState) }

// TestAuthStateFleet: a replica started on an empty disk during an IdP
// outage verifies from the keys another replica shared in Redis, honours
// its grace record, and its degraded acceptances are reconciled by the
// other one (real HTTP, real Redis).
func TestAuthStateFleet(t *testing.T) { statetest.RunFleet(t, newAuthState) }
