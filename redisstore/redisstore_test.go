package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/internal/recordcodec"
	"github.com/holdfast-go/holdfast/redisstore"
)

// newClient connects to HOLDFAST_REDIS_ADDR (default 127.0.0.1:6379). It
// skips the test if Redis is unreachable, unless CI=true.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	addr := os.Getenv("HOLDFAST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("CI") == "true" {
			tb.Fatalf("redis at %s unreachable: %v", addr, err)
		}
		tb.Skipf("redis at %s unreachable: %v", addr, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// newPrefix returns a prefix of its own and deletes its keys at cleanup.
func newPrefix(tb testing.TB, c *redis.Client) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	prefix := "holdfast-test:" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx := context.Background()
		for _, pattern := range []string{prefix + ":*", "{" + prefix + "}:*"} {
			iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
		}
	})
	return prefix
}

func newStore(tb testing.TB) (*redisstore.Store, *redis.Client, string) {
	c := newClient(tb)
	prefix := newPrefix(tb, c)
	return redisstore.New(c, redisstore.Config{Prefix: prefix}), c, prefix
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		s, _, _ := newStore(t)
		return s
	})
}

func TestNewPanics(t *testing.T) {
	assert.PanicsWithValue(t, "redisstore: nil client", func() { redisstore.New(nil, redisstore.Config{}) })
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	assert.Panics(t, func() { redisstore.New(c, redisstore.Config{Prefix: "a{b}"}) }, "a brace would break the hash tag")
}

// counter counts the commands sent to Redis, a pipeline counting once: the
// round trips.
type counter struct{ trips, cmds atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.trips.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.trips.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestRoundTrips(t *testing.T) {
	s, c, _ := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.Load(ctx), "warm the script cache so no EVALSHA misses")
	cnt := &counter{}
	c.AddHook(cnt)

	resp := idempotency.Response{Status: 201, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"id":1}`)}
	rec, claimed, err := s.Claim(ctx, "k1", "fp", "owner-1", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	require.NoError(t, s.Complete(ctx, "k1", "owner-1", rec.Fence, resp, time.Hour))
	assert.Equal(t, int64(2), cnt.trips.Load(), "a first request: Claim + Complete")

	cnt.trips.Store(0)
	rec, claimed, err = s.Claim(ctx, "k1", "fp", "owner-2", time.Minute)
	require.NoError(t, err)
	assert.False(t, claimed)
	require.NotNil(t, rec.Response, "Claim answers a replay with the stored response")
	assert.Equal(t, []byte(`{"id":1}`), rec.Response.Body)
	assert.Equal(t, int64(1), cnt.trips.Load(), "a replay: Claim")

	cnt.trips.Store(0)
	_, created, err := s.Enqueue(ctx, "q1", "fp", idempotency.Request{Method: "POST", URL: "/x"}, time.Hour)
	require.NoError(t, err)
	require.True(t, created)
	assert.Equal(t, int64(3), cnt.trips.Load(), "a new queued request: look, allocate, create")
	cnt.trips.Store(0)
	_, created, err = s.Enqueue(ctx, "q1", "fp", idempotency.Request{Method: "POST", URL: "/x"}, time.Hour)
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, int64(1), cnt.trips.Load(), "a duplicate enqueue: look")
}

// TestExpiryOfRecords checks the keys' TTLs in Redis: an in-flight record
// lives for its lease plus the grace, a done one for its ttl.
func TestExpiryOfRecords(t *testing.T) {
	c := newClient(t)
	prefix := newPrefix(t, c)
	s := redisstore.New(c, redisstore.Config{Prefix: prefix, InFlightGrace: 10 * time.Second})
	ctx := t.Context()
	rec, _, err := s.Claim(ctx, "k", "fp", "o", 20*time.Second)
	require.NoError(t, err)
	ttl := c.PTTL(ctx, prefix+":r:k").Val()
	assert.InDelta(t, float64(30*time.Second), float64(ttl), float64(time.Second), "lease + grace")

	require.NoError(t, s.Complete(ctx, "k", "o", rec.Fence, idempotency.Response{Status: 200}, time.Hour))
	ttl = c.PTTL(ctx, prefix+":r:k").Val()
	assert.InDelta(t, float64(time.Hour), float64(ttl), float64(time.Second), "ttl once done")

	// A queued record whose replay lease outlasts its ttl lives as long as
	// the lease.
	_, _, err = s.Enqueue(ctx, "q", "fp", idempotency.Request{Method: "POST"}, 5*time.Second)
	require.NoError(t, err)
	q, err := s.ClaimQueued(ctx, "r", time.Minute, 1)
	require.NoError(t, err)
	require.Len(t, q, 1)
	ttl = c.PTTL(ctx, prefix+":r:q").Val()
	assert.InDelta(t, float64(time.Minute), float64(ttl), float64(time.Second))
}

// TestQueueIndexCleanup checks that ClaimQueued removes members of the queue
// index that point at completed records, and keeps the young members whose
// record may still be in creation.
func TestQueueIndexCleanup(t *testing.T) {
	s, c, prefix := newStore(t)
	ctx := t.Context()
	qkey := "{" + prefix + "}:queue"
	for _, k := range []string{"a", "b"} {
		_, created, err := s.Enqueue(ctx, k, "fp", idempotency.Request{Method: "POST", URL: "/" + k}, time.Hour)
		require.NoError(t, err)
		require.True(t, created)
	}
	require.Equal(t, int64(2), c.ZCard(ctx, qkey).Val())
	q, err := s.ClaimQueued(ctx, "r", time.Minute, 10)
	require.NoError(t, err)
	require.Len(t, q, 2)
	require.NoError(t, s.Complete(ctx, "a", "r", q[0].Record.Fence, idempotency.Response{Status: 200}, time.Hour))

	// A member allocated just now whose record does not exist (an Enqueue
	// between allocation and creation) must survive; an old one must go.
	young := "1000000:" + timeMs(time.Now()) + ":ghost-young"
	old := "1000001:" + timeMs(time.Now().Add(-2*time.Minute)) + ":ghost-old"
	require.NoError(t, c.ZAdd(ctx, qkey, redis.Z{Score: 1000000, Member: young}, redis.Z{Score: 1000001, Member: old}).Err())

	none, err := s.ClaimQueued(ctx, "r2", time.Minute, 10)
	require.NoError(t, err)
	assert.Empty(t, none, "b is still held by r")
	members := c.ZRange(ctx, qkey, 0, -1).Val()
	require.Len(t, members, 2, "the completed record's and the old ghost's members are removed")
	assert.Contains(t, members[0], ":b")
	assert.Equal(t, young, members[1])
}

func timeMs(t time.Time) string { return itoa(t.UnixMilli()) }

func itoa(n int64) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// TestCorruptRecord checks that a record damaged in Redis is an error, not a
// panic or a wrong replay.
func TestCorruptRecord(t *testing.T) {
	s, c, prefix := newStore(t)
	ctx := t.Context()
	require.NoError(t, c.HSet(ctx, prefix+":r:bad", "st", "2", "fp", "fp", "fe", "1", "rs", "\x07junk").Err())
	_, _, err := s.Get(ctx, "bad")
	assert.Error(t, err)
	_, _, err = s.Claim(ctx, "bad", "fp", "o", time.Minute)
	assert.Error(t, err)
	require.NoError(t, c.HSet(ctx, prefix+":r:bad2", "st", "9").Err())
	_, _, err = s.Get(ctx, "bad2")
	assert.Error(t, err)
	// Well encoded, but no handler writes status 0: replaying it would
	// panic in WriteHeader.
	require.NoError(t, c.HSet(ctx, prefix+":r:bad3", "st", "2", "fp", "fp", "fe", "1",
		"rs", string(recordcodec.EncodeResponse(0, nil, nil))).Err())
	_, _, err = s.Claim(ctx, "bad3", "fp", "o", time.Minute)
	assert.ErrorIs(t, err, recordcodec.ErrCorrupt)
}

// TestRedisDown checks that an unreachable Redis is an error from every
// method (the handler turns it into 503), never a claim.
func TestRedisDown(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	s := redisstore.New(c, redisstore.Config{})
	ctx := t.Context()
	_, claimed, err := s.Claim(ctx, "k", "fp", "o", time.Minute)
	assert.Error(t, err)
	assert.False(t, claimed)
	assert.Error(t, s.Complete(ctx, "k", "o", 1, idempotency.Response{Status: 200}, time.Hour))
	assert.NotErrorIs(t, s.Complete(ctx, "k", "o", 1, idempotency.Response{Status: 200}, time.Hour), idempotency.ErrNotOwner)
	_, _, err = s.Get(ctx, "k")
	assert.Error(t, err)
	_, _, err = s.Enqueue(ctx, "k", "fp", idempotency.Request{}, time.Hour)
	assert.Error(t, err)
	_, err = s.ClaimQueued(ctx, "o", time.Minute, 1)
	assert.Error(t, err)
}

// TestClaimRetried checks that a Claim the client library sent again after
// a lost reply is recognized as the caller's own: owners are unique per
// request.
func TestClaimRetried(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := t.Context()
	first, claimed, err := s.Claim(ctx, "k", "fp", "owner-1", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	again, claimed, err := s.Claim(ctx, "k", "fp", "owner-1", time.Minute)
	require.NoError(t, err)
	assert.True(t, claimed)
	assert.Equal(t, first.Fence, again.Fence, "nothing changed")
	_, claimed, err = s.Claim(ctx, "k", "fp", "owner-2", time.Minute)
	require.NoError(t, err)
	assert.False(t, claimed)
}

// TestClaimQueuedPages checks the queue order over more than one page of
// the index, with busy records and garbage members in between.
func TestClaimQueuedPages(t *testing.T) {
	s, c, prefix := newStore(t)
	ctx := t.Context()
	const n = 150
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "q" + itoa(int64(i))
		_, created, err := s.Enqueue(ctx, keys[i], "fp", idempotency.Request{Method: "POST", URL: "/" + keys[i]}, time.Hour)
		require.NoError(t, err)
		require.True(t, created)
	}
	// Hold every third record, complete every fifth: those are skipped.
	busy, err := s.ClaimQueued(ctx, "holder", time.Minute, n)
	require.NoError(t, err)
	require.Len(t, busy, n)
	var want []string
	for i, q := range busy {
		switch {
		case i%5 == 0:
			require.NoError(t, s.Complete(ctx, q.Key, "holder", q.Record.Fence, idempotency.Response{Status: 200}, time.Hour))
		case i%3 == 0:
		default:
			require.NoError(t, s.Release(ctx, q.Key, "holder", q.Record.Fence))
			want = append(want, q.Key)
		}
	}
	var got []string
	for {
		q, err := s.ClaimQueued(ctx, "replayer", time.Minute, 7)
		require.NoError(t, err)
		if len(q) == 0 {
			break
		}
		for _, item := range q {
			got = append(got, item.Key)
		}
	}
	assert.Equal(t, want, got, "released records, in their original order, across pages")
	assert.Equal(t, int64(n-n/5), c.ZCard(ctx, "{"+prefix+"}:queue").Val(), "the completed records left the index")
}
