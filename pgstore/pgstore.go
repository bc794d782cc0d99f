package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/recordcodec"
)

// Config configures a Store.
type Config struct {
	// Table is the table's name, optionally schema-qualified
	// ("holdfast.idempotency"). Each part must be a lower-case SQL
	// identifier: a letter or underscore, then letters, digits or
	// underscores, at most 48 characters (the index names add a suffix).
	// If empty, "holdfast_idempotency".
	Table string

	// InFlightGrace is how long an in-flight record outlives its lease
	// before it counts as expired, so that a late duplicate still finds it
	// and takes it over with a higher fence. If zero, one minute.
	InFlightGrace time.Duration

	// SweepInterval is how often the background sweeper deletes expired
	// rows. If zero, one minute. Expired rows are never returned, swept or
	// not; sweeping only bounds the table's size.
	SweepInterval time.Duration

	// SweepBatch is how many rows one sweep statement deletes; a sweep
	// runs statements until fewer rows are left. If zero, 1000.
	SweepBatch int

	// DisableSweeper stops New from starting the background sweeper: call
	// Sweep yourself (from one replica or a cron job).
	DisableSweeper bool

	// Logger receives the sweeper's errors. If nil, they are not logged.
	Logger *slog.Logger
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// Store is an idempotency.Store on a PostgreSQL table. It is safe for
// concurrent use by many goroutines and many processes sharing the table.
// It does not own the pool. Close stops the background sweeper.
type Store struct {
	pool  *pgxpool.Pool
	grace time.Duration
	batch int
	q     queries

	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	log  *slog.Logger
}

var _ idempotency.Store = (*Store)(nil)

type queries struct {
	lockID                                                          int64
	migrate                                                         []string
	claim, extend, complete, release, requeue, get, enqueue, claimQ string
	sweep                                                           string
}

// New returns a Store on the table cfg.Table reached through pool, and
// starts the background sweeper unless cfg.DisableSweeper. It does not
// create the table: call Migrate, or create it with the SQL of the package
// doc. It panics if pool is nil or the table name is not a valid
// identifier.
func New(pool *pgxpool.Pool, cfg Config) *Store {
	parts := tableParts(pool, cfg.Table, "holdfast_idempotency")
	if cfg.InFlightGrace <= 0 {
		cfg.InFlightGrace = time.Minute
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Minute
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = 1000
	}
	s := &Store{
		pool:  pool,
		grace: cfg.InFlightGrace,
		batch: cfg.SweepBatch,
		q:     buildQueries(parts),
		stop:  make(chan struct{}),
		log:   cfg.Logger,
	}
	if !cfg.DisableSweeper {
		s.wg.Add(1)
		go s.sweepLoop(cfg.SweepInterval)
	}
	return s
}

// Close stops the background sweeper and waits for a running sweep. It
// does not close the pool. Close is idempotent.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}

func buildQueries(parts []string) queries {
	table := pgx.Identifier(parts).Sanitize()
	base := parts[len(parts)-1]
	idx := func(suffix string) string { return pgx.Identifier{base + suffix}.Sanitize() }
	h := fnv.New64a()
	h.Write([]byte("holdfast/pgstore:" + strings.Join(parts, ".")))
	r := strings.NewReplacer("$T", table, "$QI", idx("_queue_idx"), "$EI", idx("_expires_idx"))
	q := queries{lockID: int64(h.Sum64() >> 1)}
	for _, stmt := range migrationSQL {
		q.migrate = append(q.migrate, r.Replace(stmt))
	}
	q.claim = r.Replace(claimSQL)
	q.extend = r.Replace(extendSQL)
	q.complete = r.Replace(completeSQL)
	q.release = r.Replace(releaseSQL)
	q.requeue = r.Replace(requeueSQL)
	q.get = r.Replace(getSQL)
	q.enqueue = r.Replace(enqueueSQL)
	q.claimQ = r.Replace(claimQueuedSQL)
	q.sweep = r.Replace(sweepSQL)
	return q
}

// Migrate creates the table and its indexes if they do not exist. Replicas
// may call it concurrently: it serializes on an advisory lock.
func (s *Store) Migrate(ctx context.Context) error {
	return migrate(ctx, s.pool, s.q.lockID, s.q.migrate, "")
}

// Claim implements idempotency.Store. It is one statement: the insert, the
// takeover of an expired lease and, if neither happened, the existing
// record.
func (s *Store) Claim(ctx context.Context, key, fingerprint, owner string, lease time.Duration) (idempotency.Record, bool, error) {
	rec, claimed, err := s.upsert(ctx, "claim", s.q.claim, key, fingerprint, owner, lease, s.grace)
	if err != nil {
		return rec, false, err
	}
	// A claim retried after a lost answer finds the record already ours:
	// owners are unique per request.
	if !claimed && rec.State == idempotency.StateInFlight && rec.Owner == owner && rec.Fingerprint == fingerprint {
		claimed = true
	}
	return rec, claimed, nil
}

// upsertAttempts bounds the retries of an upsert that found a conflicting
// row its statement's snapshot cannot see (committed concurrently).
const upsertAttempts = 5

func (s *Store) upsert(ctx context.Context, op, sql string, args ...any) (idempotency.Record, bool, error) {
	for range upsertAttempts {
		rows, err := s.pool.Query(ctx, sql, args...)
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("pgstore: %s: %w", op, err)
		}
		recs, err := scanRecords(rows)
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("pgstore: %s: %w", op, err)
		}
		if len(recs) == 1 {
			return recs[0].rec, recs[0].flag, nil
		}
	}
	return idempotency.Record{}, false, fmt.Errorf("pgstore: %s: no row after %d attempts", op, upsertAttempts)
}

// Extend implements idempotency.Store.
func (s *Store) Extend(ctx context.Context, key, owner string, fence uint64, lease time.Duration) error {
	return s.conditional(ctx, "extend", s.q.extend, key, owner, int64(fence), lease, s.grace)
}

// Complete implements idempotency.Store.
func (s *Store) Complete(ctx context.Context, key, owner string, fence uint64, resp idempotency.Response, ttl time.Duration) error {
	enc := recordcodec.EncodeResponse(resp.Status, resp.Header, resp.Body)
	return s.conditional(ctx, "complete", s.q.complete, key, owner, int64(fence), enc, ttl)
}

// Release implements idempotency.Store.
func (s *Store) Release(ctx context.Context, key, owner string, fence uint64) error {
	return s.conditional(ctx, "release", s.q.release, key, owner, int64(fence))
}

// Requeue implements idempotency.Store.
func (s *Store) Requeue(ctx context.Context, key, owner string, fence uint64) error {
	return s.conditional(ctx, "requeue", s.q.requeue, key, owner, int64(fence))
}

func (s *Store) conditional(ctx context.Context, op, sql string, args ...any) error {
	var n int64
	if err := s.pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
	if n == 0 {
		return idempotency.ErrNotOwner
	}
	return nil
}

// Get implements idempotency.Store.
func (s *Store) Get(ctx context.Context, key string) (idempotency.Record, bool, error) {
	rows, err := s.pool.Query(ctx, s.q.get, key)
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("pgstore: get: %w", err)
	}
	recs, err := scanRecords(rows)
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("pgstore: get: %w", err)
	}
	if len(recs) == 0 {
		return idempotency.Record{}, false, nil
	}
	return recs[0].rec, true, nil
}

// Enqueue implements idempotency.Store. It is one statement.
func (s *Store) Enqueue(ctx context.Context, key, fingerprint string, req idempotency.Request, ttl time.Duration) (idempotency.Record, bool, error) {
	enc := recordcodec.EncodeRequest(toCodec(req))
	return s.upsert(ctx, "enqueue", s.q.enqueue, key, fingerprint, enc, ttl)
}

// ClaimQueued implements idempotency.Store. It is one statement; rows
// locked by a concurrent ClaimQueued are skipped (FOR UPDATE SKIP LOCKED),
// not waited for.
func (s *Store) ClaimQueued(ctx context.Context, owner string, lease time.Duration, limit int) ([]idempotency.Queued, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.q.claimQ, owner, lease, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: claim queued: %w", err)
	}
	recs, err := scanRecords(rows)
	if err != nil {
		return nil, fmt.Errorf("pgstore: claim queued: %w", err)
	}
	slices.SortFunc(recs, func(a, b scanned) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	out := make([]idempotency.Queued, len(recs))
	for i, r := range recs {
		out[i] = idempotency.Queued{Key: r.key, Record: r.rec}
	}
	return out, nil
}

// Sweep deletes expired rows, at most batch per statement (if batch <= 0,
// Config.SweepBatch), until none is left, and returns how many it deleted.
// Concurrent sweeps skip each other's rows.
func (s *Store) Sweep(ctx context.Context, batch int) (int64, error) {
	if batch <= 0 {
		batch = s.batch
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.q.sweep, batch)
		if err != nil {
			return total, fmt.Errorf("pgstore: sweep: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, context.Cause(ctx)
		}
	}
}

func (s *Store) sweepLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.Sweep(ctx, 0); err != nil && !errors.Is(err, context.Canceled) && s.log != nil {
				s.log.Warn("pgstore: sweep failed", "err", err)
			}
		}
	}
}

type scanned struct {
	flag bool
	key  string
	seq  int64
	rec  idempotency.Record
}

// scanRecords reads rows of recordColumns.
func scanRecords(rows pgx.Rows) ([]scanned, error) {
	defer rows.Close()
	var out []scanned
	for rows.Next() {
		var (
			r            scanned
			state        int16
			fence        int64
			leaseUntil   *time.Time
			resp, reqEnc []byte
			attempts     int32
		)
		if err := rows.Scan(&r.flag, &r.key, &state, &r.rec.Fingerprint, &r.rec.Owner, &fence,
			&leaseUntil, &r.rec.Created, &resp, &reqEnc, &r.seq, &attempts); err != nil {
			return nil, err
		}
		if state < 1 || state > 3 {
			return nil, fmt.Errorf("corrupt record state %d", state)
		}
		r.rec.State = idempotency.State(state)
		r.rec.Fence = uint64(fence)
		r.rec.Attempts = int(attempts)
		if leaseUntil != nil {
			r.rec.LeaseUntil = *leaseUntil
		}
		if resp != nil {
			status, header, body, err := recordcodec.DecodeResponse(resp)
			if err != nil {
				return nil, fmt.Errorf("stored response: %w", err)
			}
			r.rec.Response = &idempotency.Response{Status: status, Header: header, Body: body}
		}
		if reqEnc != nil {
			q, err := recordcodec.DecodeRequest(reqEnc)
			if err != nil {
				return nil, fmt.Errorf("stored request: %w", err)
			}
			r.rec.Request = fromCodec(q)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func toCodec(r idempotency.Request) recordcodec.Request {
	q := recordcodec.Request{Method: r.Method, URL: r.URL, Header: r.Header, Body: r.Body, Sealed: r.Sealed}
	if c := r.Caller; c != nil {
		q.Caller = &recordcodec.Caller{Issuer: c.Issuer, Subject: c.Subject, Scopes: c.Scopes, Reason: c.Reason}
	}
	return q
}

func fromCodec(q recordcodec.Request) *idempotency.Request {
	r := &idempotency.Request{Method: q.Method, URL: q.URL, Header: q.Header, Body: q.Body, Sealed: q.Sealed}
	if c := q.Caller; c != nil {
		r.Caller = &idempotency.Caller{Issuer: c.Issuer, Subject: c.Subject, Scopes: c.Scopes, Reason: c.Reason}
	}
	return r
}
