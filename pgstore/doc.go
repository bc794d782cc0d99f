// Package pgstore provides an [idempotency.Store] on PostgreSQL (pgx v5), so
// that several replicas of a service share their Idempotency-Key records.
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
//	store := pgstore.New(pool, pgstore.Config{Table: "idempotency"})
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { ... }
//	x := idempotency.New(idempotency.Config{Store: store})
//
// # Model
//
// One table holds the records, one row each. Every operation is a single
// statement in its own (implicit) transaction, and time is always the
// database's now(), never a replica's clock:
//
//   - Claim is an INSERT ... ON CONFLICT DO UPDATE that creates the record,
//     takes the place of an expired one, or takes over an expired lease with
//     the same fingerprint (increasing the fence), all in the same
//     statement. When the row it sees can't be claimed (a stored response, a
//     live lease, a queued request), the statement only reads: a replay
//     takes no row lock and writes no WAL.
//   - Extend, Complete and Release are UPDATEs (a DELETE for Release)
//     conditional on the owner token and the fence of the claim: a request
//     whose lease was taken over gets [idempotency.ErrNotOwner] and changes
//     nothing.
//   - The queue is ordered by the bigserial seq, kept when a replay is
//     released; ClaimQueued claims the oldest queued rows (and rows of a
//     crashed replay) with SELECT ... FOR UPDATE SKIP LOCKED, so concurrent
//     replayers never wait for or duplicate each other.
//   - Expired rows count as absent everywhere. [Store.Sweep] deletes them in
//     batches (SKIP LOCKED, so replicas may sweep at once); New starts a
//     background sweeper (every [Config.SweepInterval]) unless
//     [Config.DisableSweeper]; [Store.Close] stops it.
//
// Round trips: a first request costs two statements (Claim, Complete), a
// replay one, plus one Extend per third of the lease while a slow handler
// runs; with pgx's default statement cache each is one network round trip
// once a connection has prepared it. Complete commits, so its latency is
// the server's commit (WAL flush) latency; a deployment that accepts losing
// the last records on a database crash may run the pool's sessions with
// synchronous_commit = off.
//
// # Schema
//
// [Store.Migrate] runs the following (serialized by an advisory lock, so
// replicas may all call it at start), where $T is the table and the index
// names are the table's name with a suffix. Run it yourself instead if the
// service's database role may not create tables.
//
//	CREATE TABLE IF NOT EXISTS $T (
//		key         text        PRIMARY KEY,
//		state       smallint    NOT NULL CHECK (state BETWEEN 1 AND 3), -- in flight, done, queued
//		fingerprint text        NOT NULL,
//		owner       text        NOT NULL DEFAULT '',
//		fence       bigint      NOT NULL DEFAULT 0,
//		lease_until timestamptz,
//		created     timestamptz NOT NULL,
//		expires     timestamptz NOT NULL,
//		response    bytea,     -- encoded stored response
//		request     bytea,     -- encoded queued request
//		seq         bigserial   NOT NULL
//	);
//	ALTER TABLE $T ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0; -- failed replays
//	CREATE INDEX IF NOT EXISTS $T_queue_idx ON $T (seq) WHERE request IS NOT NULL;
//	CREATE INDEX IF NOT EXISTS $T_expires_idx ON $T (expires);
//
// The table name comes from [Config.Table] and is checked against a strict
// pattern (lower-case identifiers, optionally schema-qualified) and quoted;
// New panics on anything else, so it can't carry SQL.
//
// A table created by an older version gains the attempts column when
// Migrate runs again.
//
// # Durability
//
// A write answered 202 Accepted during an outage (idempotency's Enqueue) is
// as durable as its committed row: with synchronous_commit off, a crash may
// lose the last ones; with an asynchronous standby, a failover may. Queued
// requests carry the verified caller recorded at Enqueue, never a plaintext
// bearer token or cookie (stripped, or sealed by the handler's Config.Seal);
// a completion deletes the request.
//
// # Concurrency
//
// A Store is safe for concurrent use by any number of goroutines and
// processes sharing the table. It does not own the pool.
package pgstore
