package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/authfallback"
)

// AuthStateConfig configures an AuthState.
type AuthStateConfig struct {
	// Table is the base name of the three tables (Table+"_keys",
	// Table+"_seen", Table+"_degraded"), optionally schema-qualified. Each
	// part must be a lower-case SQL identifier of at most 48 characters.
	// If empty, "holdfast_auth".
	Table string
}

// AuthState is an authfallback.StateStore on PostgreSQL: the outage state
// (key set, tokens seen valid, degraded acceptances) that the Verifiers of
// a fleet share. It is safe for concurrent use by many goroutines and many
// processes sharing the tables. It does not own the pool. Create the tables
// with Migrate.
//
// Every operation is one statement: SaveKeys an upsert that only replaces
// an older set, AddSeen and AddDegraded one batched upsert each (unnest of
// arrays), TakeDegraded a DELETE ... RETURNING over rows locked with FOR
// UPDATE SKIP LOCKED, so two replicas never take the same record. Expiry
// is checked against the database's now(); expired rows are swept by
// TakeDegraded (and Sweep).
type AuthState struct {
	pool *pgxpool.Pool
	q    authQueries
}

var _ authfallback.StateStore = (*AuthState)(nil)

type authQueries struct {
	lockID                                          int64
	migrate                                         []string
	saveKeys, loadKeys, addSeen, seen, addDeg, take string
	sweepSeen, sweepDeg                             string
}

// NewAuthState returns an AuthState on the tables named by cfg.Table. It
// panics if pool is nil or the name is not valid.
func NewAuthState(pool *pgxpool.Pool, cfg AuthStateConfig) *AuthState {
	parts := tableParts(pool, cfg.Table, "holdfast_auth")
	return &AuthState{pool: pool, q: buildAuthQueries(parts)}
}

func buildAuthQueries(parts []string) authQueries {
	name := func(suffix string) string {
		p := append([]string(nil), parts...)
		p[len(p)-1] += suffix
		return pgx.Identifier(p).Sanitize()
	}
	base := parts[len(parts)-1]
	h := fnv.New64a()
	h.Write([]byte("holdfast/pgstore/auth:" + strings.Join(parts, ".")))
	r := strings.NewReplacer("{K}", name("_keys"), "{S}", name("_seen"), "{D}", name("_degraded"),
		"{SI}", pgx.Identifier{base + "_seen_exp_idx"}.Sanitize(), "{DI}", pgx.Identifier{base + "_degraded_exp_idx"}.Sanitize())
	q := authQueries{lockID: int64(h.Sum64() >> 1)}
	for _, stmt := range authMigrationSQL {
		q.migrate = append(q.migrate, r.Replace(stmt))
	}
	q.saveKeys = r.Replace(authSaveKeysSQL)
	q.loadKeys = r.Replace(`SELECT fetched_at, doc FROM {K} WHERE issuer = $1`)
	q.addSeen = r.Replace(authAddSeenSQL)
	q.seen = r.Replace(`SELECT issuer, seen_at, expires_at, expires FROM {S} WHERE hash = $1 AND expires > now()`)
	q.addDeg = r.Replace(authAddDegradedSQL)
	q.take = r.Replace(authTakeSQL)
	q.sweepSeen = r.Replace(`DELETE FROM {S} WHERE hash IN (SELECT hash FROM {S} WHERE expires <= now() LIMIT 1000)`)
	q.sweepDeg = r.Replace(`DELETE FROM {D} WHERE issuer = $1 AND expires <= now()`)
	return q
}

var authMigrationSQL = []string{
	`CREATE TABLE IF NOT EXISTS {K} (
	issuer     text        PRIMARY KEY,
	fetched_at timestamptz NOT NULL,
	doc        bytea       NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS {S} (
	hash       text        PRIMARY KEY,
	issuer     text        NOT NULL,
	seen_at    timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	expires    timestamptz NOT NULL
)`,
	`CREATE INDEX IF NOT EXISTS {SI} ON {S} (expires)`,
	`CREATE TABLE IF NOT EXISTS {D} (
	issuer   text        NOT NULL,
	hash     text        NOT NULL,
	doc      bytea       NOT NULL,
	count    bigint      NOT NULL,
	first_at timestamptz NOT NULL,
	last_at  timestamptz NOT NULL,
	expires  timestamptz NOT NULL,
	PRIMARY KEY (issuer, hash)
)`,
	`CREATE INDEX IF NOT EXISTS {DI} ON {D} (issuer, expires)`,
}

// An older (or equally old) set never replaces the stored one: no row is
// returned then.
const authSaveKeysSQL = `INSERT INTO {K} AS t (issuer, fetched_at, doc) VALUES ($1, $2, $3)
ON CONFLICT (issuer) DO UPDATE SET fetched_at = excluded.fetched_at, doc = excluded.doc
WHERE t.fetched_at < excluded.fetched_at
RETURNING true`

// The first record of a token stays, unless it has expired.
const authAddSeenSQL = `INSERT INTO {S} AS t (hash, issuer, seen_at, expires_at, expires)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
ON CONFLICT (hash) DO UPDATE SET issuer = excluded.issuer, seen_at = excluded.seen_at,
	expires_at = excluded.expires_at, expires = excluded.expires
WHERE t.expires <= now()`

const authAddDegradedSQL = `INSERT INTO {D} AS t (issuer, hash, doc, count, first_at, last_at, expires)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[])
ON CONFLICT (issuer, hash) DO UPDATE SET
	doc      = CASE WHEN t.expires <= now() THEN excluded.doc ELSE t.doc END,
	count    = CASE WHEN t.expires <= now() THEN excluded.count ELSE t.count + excluded.count END,
	first_at = CASE WHEN t.expires <= now() THEN excluded.first_at ELSE least(t.first_at, excluded.first_at) END,
	last_at  = CASE WHEN t.expires <= now() THEN excluded.last_at ELSE greatest(t.last_at, excluded.last_at) END,
	expires  = CASE WHEN t.expires <= now() THEN excluded.expires ELSE greatest(t.expires, excluded.expires) END`

const authTakeSQL = `DELETE FROM {D} WHERE (issuer, hash) IN (
	SELECT issuer, hash FROM {D} WHERE issuer = $1 AND expires > now() LIMIT $2 FOR UPDATE SKIP LOCKED
) RETURNING hash, doc, count, first_at, last_at, expires`

// Migrate creates the tables if they do not exist. Replicas may call it
// concurrently: it serializes on an advisory lock.
func (s *AuthState) Migrate(ctx context.Context) error {
	return migrate(ctx, s.pool, s.q.lockID, s.q.migrate, " auth state")
}

// LoadKeys implements authfallback.StateStore.
func (s *AuthState) LoadKeys(ctx context.Context, issuer string) (authfallback.KeySetRecord, bool, error) {
	rec := authfallback.KeySetRecord{Issuer: issuer}
	err := s.pool.QueryRow(ctx, s.q.loadKeys, issuer).Scan(&rec.FetchedAt, &rec.Doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return authfallback.KeySetRecord{}, false, nil
	}
	if err != nil {
		return authfallback.KeySetRecord{}, false, fmt.Errorf("pgstore: load keys: %w", err)
	}
	return rec, true, nil
}

// SaveKeys implements authfallback.StateStore.
func (s *AuthState) SaveKeys(ctx context.Context, rec authfallback.KeySetRecord) (bool, error) {
	if err := authfallback.CheckKeySetRecord(rec); err != nil {
		return false, err
	}
	var stored bool
	err := s.pool.QueryRow(ctx, s.q.saveKeys, rec.Issuer, rec.FetchedAt, rec.Doc).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pgstore: save keys: %w", err)
	}
	return stored, nil
}

// AddSeen implements authfallback.StateStore.
func (s *AuthState) AddSeen(ctx context.Context, recs []authfallback.SeenToken) error {
	// One statement may not touch a row twice: keep the earliest record of
	// each hash.
	first := map[string]int{}
	var hashes, issuers []string
	var seenAt, expAt, expires []time.Time
	for _, r := range recs {
		if r.TokenHash == "" {
			return authfallback.ErrStateRecord
		}
		if i, ok := first[r.TokenHash]; ok {
			if r.SeenAt.Before(seenAt[i]) {
				issuers[i], seenAt[i], expAt[i], expires[i] = r.Issuer, r.SeenAt, r.ExpiresAt, r.Expires
			}
			continue
		}
		first[r.TokenHash] = len(hashes)
		hashes, issuers = append(hashes, r.TokenHash), append(issuers, r.Issuer)
		seenAt, expAt, expires = append(seenAt, r.SeenAt), append(expAt, r.ExpiresAt), append(expires, r.Expires)
	}
	if len(hashes) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, s.q.addSeen, hashes, issuers, seenAt, expAt, expires); err != nil {
		return fmt.Errorf("pgstore: add seen: %w", err)
	}
	return nil
}

// Seen implements authfallback.StateStore.
func (s *AuthState) Seen(ctx context.Context, hash string) (authfallback.SeenToken, bool, error) {
	rec := authfallback.SeenToken{TokenHash: hash}
	err := s.pool.QueryRow(ctx, s.q.seen, hash).Scan(&rec.Issuer, &rec.SeenAt, &rec.ExpiresAt, &rec.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return authfallback.SeenToken{}, false, nil
	}
	if err != nil {
		return authfallback.SeenToken{}, false, fmt.Errorf("pgstore: seen: %w", err)
	}
	return rec, true, nil
}

// authDegradedDoc is the stored form of the fixed fields of a
// DegradedAcceptance.
type authDegradedDoc struct {
	Subject         string    `json:"sub,omitempty"`
	ID              string    `json:"jti,omitempty"`
	IssuedAt        time.Time `json:"iat"`
	ExpiresAt       time.Time `json:"exp"`
	KeyID           string    `json:"kid,omitempty"`
	KeyFingerprint  string    `json:"fp,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	Scopes          []string  `json:"scopes,omitempty"`
	PrimaryID       string    `json:"pjti,omitempty"`
	PrimaryIssuedAt time.Time `json:"piat"`
}

// AddDegraded implements authfallback.StateStore.
func (s *AuthState) AddDegraded(ctx context.Context, recs []authfallback.DegradedAcceptance) error {
	// One statement may not touch a row twice: merge the batch first.
	idx := map[[2]string]int{}
	var merged []authfallback.DegradedAcceptance
	for _, r := range recs {
		if r.TokenHash == "" || r.Issuer == "" {
			return authfallback.ErrStateRecord
		}
		k := [2]string{r.Issuer, r.TokenHash}
		if i, ok := idx[k]; ok {
			merged[i] = authfallback.MergeDegraded(merged[i], r)
			continue
		}
		idx[k] = len(merged)
		merged = append(merged, r)
	}
	if len(merged) == 0 {
		return nil
	}
	n := len(merged)
	issuers, hashes := make([]string, 0, n), make([]string, 0, n)
	docs := make([][]byte, 0, n)
	counts := make([]int64, 0, n)
	firsts, lasts, expires := make([]time.Time, 0, n), make([]time.Time, 0, n), make([]time.Time, 0, n)
	for _, r := range merged {
		doc, _ := json.Marshal(authDegradedDoc{
			Subject: r.Subject, ID: r.ID, IssuedAt: r.IssuedAt, ExpiresAt: r.ExpiresAt, KeyID: r.KeyID,
			KeyFingerprint: r.KeyFingerprint, Reason: r.Reason, Scopes: r.Scopes, PrimaryID: r.PrimaryID,
			PrimaryIssuedAt: r.PrimaryIssuedAt,
		})
		issuers, hashes, docs = append(issuers, r.Issuer), append(hashes, r.TokenHash), append(docs, doc)
		counts = append(counts, int64(r.Count))
		firsts, lasts, expires = append(firsts, r.FirstAccepted), append(lasts, r.LastAccepted), append(expires, r.Expires)
	}
	if _, err := s.pool.Exec(ctx, s.q.addDeg, issuers, hashes, docs, counts, firsts, lasts, expires); err != nil {
		return fmt.Errorf("pgstore: add degraded: %w", err)
	}
	return nil
}

// TakeDegraded implements authfallback.StateStore. It also sweeps the
// issuer's expired records.
func (s *AuthState) TakeDegraded(ctx context.Context, issuer string, limit int) ([]authfallback.DegradedAcceptance, error) {
	if limit <= 0 {
		return nil, nil
	}
	if _, err := s.pool.Exec(ctx, s.q.sweepDeg, issuer); err != nil {
		return nil, fmt.Errorf("pgstore: take degraded: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.q.take, issuer, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: take degraded: %w", err)
	}
	defer rows.Close()
	var out []authfallback.DegradedAcceptance
	for rows.Next() {
		r := authfallback.DegradedAcceptance{Issuer: issuer}
		var doc []byte
		var count int64
		if err := rows.Scan(&r.TokenHash, &doc, &count, &r.FirstAccepted, &r.LastAccepted, &r.Expires); err != nil {
			return out, fmt.Errorf("pgstore: take degraded: %w", err)
		}
		var d authDegradedDoc
		if err := json.Unmarshal(doc, &d); err != nil {
			return out, fmt.Errorf("pgstore: take degraded: corrupt record: %w", err)
		}
		r.Count = int(count)
		r.Subject, r.ID, r.IssuedAt, r.ExpiresAt = d.Subject, d.ID, d.IssuedAt, d.ExpiresAt
		r.KeyID, r.KeyFingerprint, r.Reason, r.Scopes = d.KeyID, d.KeyFingerprint, d.Reason, d.Scopes
		r.PrimaryID, r.PrimaryIssuedAt = d.PrimaryID, d.PrimaryIssuedAt
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("pgstore: take degraded: %w", err)
	}
	return out, nil
}

// Sweep deletes expired seen-valid records (up to 1000 per call). Expired
// records are never returned, swept or not; sweeping bounds the table.
func (s *AuthState) Sweep(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, s.q.sweepSeen); err != nil {
		return fmt.Errorf("pgstore: sweep auth state: %w", err)
	}
	return nil
}
