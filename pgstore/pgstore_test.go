package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/idempotency/storetest"
	"github.com/holdfast-go/holdfast/internal/recordcodec"
	"github.com/holdfast-go/holdfast/pgstore"
)

const defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// newPool connects to HOLDFAST_PG_DSN (default: defaultDSN, then the same as
// user root). It skips the test if PostgreSQL is unreachable, unless
// CI=true. tracer, if not nil, traces the pool's queries.
func newPool(tb testing.TB, tracer pgx.QueryTracer) *pgxpool.Pool {
	tb.Helper()
	dsns := []string{os.Getenv("HOLDFAST_PG_DSN")}
	if dsns[0] == "" {
		dsns = []string{defaultDSN, strings.Replace(defaultDSN, "postgres@", "root@", 1)}
	}
	var errs []string
	for _, dsn := range dsns {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			tb.Fatalf("bad DSN %q: %v", dsn, err)
		}
		cfg.ConnConfig.Tracer = tracer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			err = pool.Ping(ctx)
		}
		cancel()
		if err == nil {
			tb.Cleanup(pool.Close)
			return pool
		}
		if pool != nil {
			pool.Close()
		}
		errs = append(errs, err.Error())
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("postgres unreachable: %s", strings.Join(errs, "; "))
	}
	tb.Skipf("postgres unreachable: %s", strings.Join(errs, "; "))
	return nil
}

// newTable returns a table name of its own and drops it at cleanup.
func newTable(tb testing.TB, pool *pgxpool.Pool) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "holdfast_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
	})
	return table
}

func newStore(tb testing.TB, pool *pgxpool.Pool, cfg pgstore.Config) *pgstore.Store {
	tb.Helper()
	if cfg.Table == "" {
		cfg.Table = newTable(tb, pool)
	}
	s := pgstore.New(pool, cfg)
	tb.Cleanup(func() { _ = s.Close() })
	require.NoError(tb, s.Migrate(context.Background()))
	return s
}

func TestConformance(t *testing.T) {
	pool := newPool(t, nil)
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		return newStore(t, pool, pgstore.Config{DisableSweeper: true})
	})
}

func TestTableNameValidated(t *testing.T) {
	pool := newPool(t, nil)
	for _, bad := range []string{
		`x; DROP TABLE users`, `"quoted"`, `Upper`, `a.b.c`, `1abc`, `a-b`, `a b`, `.a`, `a.`,
		strings.Repeat("a", 49), "tab\x00le", "é",
	} {
		assert.Panics(t, func() { pgstore.New(pool, pgstore.Config{Table: bad, DisableSweeper: true}) }, "%q", bad)
	}
	for _, good := range []string{"idem", "_x1", "public.holdfast_idem", strings.Repeat("a", 48)} {
		assert.NotPanics(t, func() { _ = pgstore.New(pool, pgstore.Config{Table: good, DisableSweeper: true}).Close() }, "%q", good)
	}
	assert.PanicsWithValue(t, "pgstore: nil pool", func() { pgstore.New(nil, pgstore.Config{}) })
}

func TestMigrateSchemaQualifiedAndConcurrent(t *testing.T) {
	pool := newPool(t, nil)
	ctx := t.Context()
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := "holdfast_test_s" + hex.EncodeToString(b[:])
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })

	s := pgstore.New(pool, pgstore.Config{Table: schema + ".idem", DisableSweeper: true})
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- s.Migrate(ctx) }()
	}
	for range 4 {
		assert.NoError(t, <-errs, "replicas may migrate at once")
	}
	_, claimed, err := s.Claim(ctx, "k", "fp", "o", time.Minute)
	require.NoError(t, err)
	assert.True(t, claimed)
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".idem").Scan(&n))
	assert.Equal(t, 1, n)
}

// counter counts the statements sent, which are the round trips once the
// connection's statement cache is warm.
type counter struct{ n atomic.Int64 }

func (c *counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestRoundTrips(t *testing.T) {
	cnt := &counter{}
	pool := newPool(t, cnt)
	table := newTable(t, pool)
	s := newStore(t, pool, pgstore.Config{Table: table, DisableSweeper: true})
	ctx := t.Context()

	cnt.n.Store(0)
	resp := idempotency.Response{Status: 201, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"id":1}`)}
	rec, claimed, err := s.Claim(ctx, "k1", "fp", "owner-1", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	require.NoError(t, s.Complete(ctx, "k1", "owner-1", rec.Fence, resp, time.Hour))
	assert.Equal(t, int64(2), cnt.n.Load(), "a first request: Claim + Complete")

	cnt.n.Store(0)
	rec, claimed, err = s.Claim(ctx, "k1", "fp", "owner-2", time.Minute)
	require.NoError(t, err)
	assert.False(t, claimed)
	require.NotNil(t, rec.Response, "Claim answers a replay with the stored response")
	assert.Equal(t, []byte(`{"id":1}`), rec.Response.Body)
	assert.Equal(t, int64(1), cnt.n.Load(), "a replay: Claim")

	// A replay only reads: it neither locks nor rewrites the row (no xid,
	// no WAL flush).
	version := func() (v string) {
		require.NoError(t, pool.QueryRow(ctx, "SELECT xmin::text || '/' || xmax::text || '/' || ctid::text FROM "+table+" WHERE key = 'k1'").Scan(&v))
		return v
	}
	before := version()
	for range 3 {
		_, claimed, err = s.Claim(ctx, "k1", "fp", "owner-3", time.Minute)
		require.NoError(t, err)
		require.False(t, claimed)
	}
	assert.Equal(t, before, version(), "replays leave the row untouched")
	cnt.n.Store(0)

	cnt.n.Store(0)
	_, created, err := s.Enqueue(ctx, "q1", "fp", idempotency.Request{Method: "POST", URL: "/x"}, time.Hour)
	require.NoError(t, err)
	require.True(t, created)
	q, err := s.ClaimQueued(ctx, "r", time.Minute, 10)
	require.NoError(t, err)
	require.Len(t, q, 1)
	assert.Equal(t, int64(2), cnt.n.Load(), "Enqueue and ClaimQueued: one statement each")
}

func TestSweep(t *testing.T) {
	pool := newPool(t, nil)
	s := newStore(t, pool, pgstore.Config{DisableSweeper: true})
	ctx := t.Context()
	for i := range 25 {
		rec, _, err := s.Claim(ctx, "done-"+itoa(i), "fp", "o", time.Minute)
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, "done-"+itoa(i), "o", rec.Fence, idempotency.Response{Status: 200}, 50*time.Millisecond))
	}
	_, _, err := s.Claim(ctx, "live", "fp", "o", time.Minute)
	require.NoError(t, err)
	_, _, err = s.Enqueue(ctx, "queued", "fp", idempotency.Request{Method: "POST"}, time.Hour)
	require.NoError(t, err)

	time.Sleep(100 * time.Millisecond) // the database's clock, not ours
	n, err := s.Sweep(ctx, 10)
	require.NoError(t, err)
	assert.Equal(t, int64(25), n, "three batches of at most 10")
	n, err = s.Sweep(ctx, 10)
	require.NoError(t, err)
	assert.Zero(t, n)
	for _, k := range []string{"live", "queued"} {
		_, ok, err := s.Get(ctx, k)
		require.NoError(t, err)
		assert.True(t, ok, "%s survives the sweep", k)
	}
}

func TestBackgroundSweeper(t *testing.T) {
	pool := newPool(t, nil)
	table := newTable(t, pool)
	s := newStore(t, pool, pgstore.Config{Table: table, SweepInterval: 50 * time.Millisecond})
	ctx := t.Context()
	rec, _, err := s.Claim(ctx, "k", "fp", "o", time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, "k", "o", rec.Fence, idempotency.Response{Status: 200}, time.Millisecond))
	assert.Eventually(t, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n))
		return n == 0
	}, 5*time.Second, 20*time.Millisecond, "the sweeper deletes the expired row")
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
}

func TestCorruptRow(t *testing.T) {
	pool := newPool(t, nil)
	table := newTable(t, pool)
	s := newStore(t, pool, pgstore.Config{Table: table, DisableSweeper: true})
	ctx := t.Context()
	_, err := pool.Exec(ctx, "INSERT INTO "+table+" (key, state, fingerprint, created, expires, response) VALUES ('bad', 2, 'fp', now(), now() + interval '1 hour', '\\x07')")
	require.NoError(t, err)
	_, _, err = s.Get(ctx, "bad")
	assert.Error(t, err)
	_, _, err = s.Claim(ctx, "bad", "fp", "o", time.Minute)
	assert.Error(t, err)
	// Well encoded, but no handler writes status 0: replaying it would
	// panic in WriteHeader.
	_, err = pool.Exec(ctx, "INSERT INTO "+table+" (key, state, fingerprint, created, expires, response) VALUES ('bad2', 2, 'fp', now(), now() + interval '1 hour', $1)",
		recordcodec.EncodeResponse(0, nil, nil))
	require.NoError(t, err)
	_, _, err = s.Claim(ctx, "bad2", "fp", "o", time.Minute)
	assert.ErrorIs(t, err, recordcodec.ErrCorrupt)
}

func TestDatabaseDown(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer pool.Close()
	s := pgstore.New(pool, pgstore.Config{DisableSweeper: true})
	defer s.Close()
	ctx := t.Context()
	_, claimed, err := s.Claim(ctx, "k", "fp", "o", time.Minute)
	assert.Error(t, err)
	assert.False(t, claimed)
	err = s.Complete(ctx, "k", "o", 1, idempotency.Response{Status: 200}, time.Hour)
	assert.Error(t, err)
	assert.NotErrorIs(t, err, idempotency.ErrNotOwner, "an outage is not a lost claim")
	_, _, err = s.Get(ctx, "k")
	assert.Error(t, err)
	_, err = s.ClaimQueued(ctx, "o", time.Minute, 1)
	assert.Error(t, err)
	assert.Error(t, s.Migrate(ctx))
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// TestClaimRetried checks that a Claim sent again after a lost answer is
// recognized as the caller's own: owners are unique per request.
func TestClaimRetried(t *testing.T) {
	s := newStore(t, newPool(t, nil), pgstore.Config{DisableSweeper: true})
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
