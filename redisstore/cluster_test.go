package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/redisstore"
)

// newClusterClient connects to the Redis Cluster at
// HOLDFAST_REDIS_CLUSTER_ADDRS (comma-separated seed addresses; .ci/run
// starts a 3-node cluster on 127.0.0.1:7001-7003). It skips the test when
// the variable is unset or the cluster unreachable, unless CI=true.
func newClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	addrs := os.Getenv("HOLDFAST_REDIS_CLUSTER_ADDRS")
	fail := tb.Skipf
	if os.Getenv("CI") == "true" {
		fail = tb.Fatalf
	}
	if addrs == "" {
		fail("HOLDFAST_REDIS_CLUSTER_ADDRS is not set")
		return nil
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() })
	if err == nil {
		var info string
		info, err = c.ClusterInfo(ctx).Result()
		if err == nil && !strings.Contains(info, "cluster_state:ok") {
			err = errFromString("cluster state is not ok")
		}
	}
	if err != nil {
		_ = c.Close()
		fail("redis cluster at %s unreachable: %v", addrs, err)
		return nil
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

type errFromString string

func (e errFromString) Error() string { return string(e) }

// newClusterPrefix returns a prefix of its own and deletes its keys on
// every master at cleanup.
func newClusterPrefix(tb testing.TB, c *redis.ClusterClient) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	prefix := "holdfast-test:" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx := context.Background()
		_ = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			for _, pattern := range []string{prefix + ":*", "{" + prefix + "}:*"} {
				iter := n.Scan(ctx, 0, pattern, 1000).Iterator()
				for iter.Next(ctx) {
					n.Del(ctx, iter.Val())
				}
			}
			return nil
		})
	})
	return prefix
}

// TestClusterConformance runs the conformance suite on a Redis Cluster:
// record keys spread over the masters, the queue's keys share a hash tag.
func TestClusterConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		c := newClusterClient(t)
		return redisstore.New(c, redisstore.Config{Prefix: newClusterPrefix(t, c)})
	})
}

// TestClusterE2E runs the two-instance end-to-end checks on a Redis
// Cluster, each instance with its own cluster client.
func TestClusterE2E(t *testing.T) {
	storetest.RunHTTP(t, func(t *testing.T) (idempotency.Store, idempotency.Store) {
		c := newClusterClient(t)
		prefix := newClusterPrefix(t, c)
		return redisstore.New(c, redisstore.Config{Prefix: prefix}),
			redisstore.New(newClusterClient(t), redisstore.Config{Prefix: prefix})
	})
}

// TestClusterSpreadsRecords checks that the records of one store live on
// more than one master (no hash tag forces them together) while Load puts
// the scripts on every master.
func TestClusterSpreadsRecords(t *testing.T) {
	c := newClusterClient(t)
	prefix := newClusterPrefix(t, c)
	s := redisstore.New(c, redisstore.Config{Prefix: prefix})
	ctx := t.Context()
	require.NoError(t, s.Load(ctx))
	for i := range 32 {
		_, claimed, err := s.Claim(ctx, "k"+itoa(int64(i)), "fp", "o", time.Minute)
		require.NoError(t, err)
		require.True(t, claimed)
	}
	var masters atomic.Int64 // ForEachMaster runs concurrently
	require.NoError(t, c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		keys, err := n.Keys(ctx, prefix+":r:*").Result()
		if len(keys) > 0 {
			masters.Add(1)
		}
		return err
	}))
	assert.Greater(t, masters.Load(), int64(1), "records spread over the masters")
}
