package pgstore

// The SQL. $T is the quoted table name, $QI and $EI the quoted index names.
// Time is always the database's now(): replicas with skewed clocks agree on
// leases. A row whose expires has passed counts as absent everywhere, swept
// or not.

var migrationSQL = []string{
	`CREATE TABLE IF NOT EXISTS $T (
	key         text        PRIMARY KEY,
	state       smallint    NOT NULL CHECK (state BETWEEN 1 AND 3),
	fingerprint text        NOT NULL,
	owner       text        NOT NULL DEFAULT '',
	fence       bigint      NOT NULL DEFAULT 0,
	lease_until timestamptz,
	created     timestamptz NOT NULL,
	expires     timestamptz NOT NULL,
	response    bytea,
	request     bytea,
	seq         bigserial   NOT NULL
)`,
	`ALTER TABLE $T ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0`,
	`CREATE INDEX IF NOT EXISTS $QI ON $T (seq) WHERE request IS NOT NULL`,
	`CREATE INDEX IF NOT EXISTS $EI ON $T (expires)`,
}

// recordColumns are the columns every query that answers with records
// returns, after a leading boolean (claimed or created).
const recordColumns = `key, state, fingerprint, owner, fence, lease_until, created, response, request, seq, attempts`

// claimSQL: $1 key, $2 fingerprint, $3 owner, $4 lease, $5 in-flight grace.
// If the row in the statement's snapshot can't be claimed (done, queued,
// held under a live lease, another fingerprint), it is answered as it is:
// a replay reads and writes nothing. Otherwise the insert takes an expired
// row's place or takes over an expired lease with the same fingerprint, the
// conditions checked again on the latest row version. An empty answer means
// the row changed after the snapshot (a conflicting row committed, or a
// takeover by someone else): the caller runs the statement again, so it
// never answers with a stale expired lease.
const claimSQL = `WITH cur AS (
	SELECT ` + recordColumns + ` FROM $T WHERE key = $1 AND expires > now()
), ins AS (
	INSERT INTO $T AS r (key, state, fingerprint, owner, fence, lease_until, created, expires)
	SELECT $1, 1, $2, $3, 1, now() + $4::interval, now(), now() + $4::interval + $5::interval
	WHERE NOT EXISTS (SELECT 1 FROM cur WHERE NOT (state = 1 AND lease_until <= now() AND fingerprint = $2))
	ON CONFLICT (key) DO UPDATE SET
		state = 1,
		fingerprint = excluded.fingerprint,
		owner = excluded.owner,
		fence = r.fence + 1,
		lease_until = excluded.lease_until,
		created = CASE WHEN r.expires <= now() THEN now() ELSE r.created END,
		expires = CASE WHEN r.expires > now() AND r.request IS NOT NULL
			THEN greatest(r.expires, excluded.lease_until) ELSE excluded.expires END,
		response = NULL,
		request = CASE WHEN r.expires <= now() THEN NULL ELSE r.request END,
		seq = CASE WHEN r.expires <= now() THEN excluded.seq ELSE r.seq END,
		attempts = CASE WHEN r.expires <= now() THEN 0 ELSE r.attempts END
	WHERE r.expires <= now()
	   OR (r.state = 1 AND r.lease_until <= now() AND r.fingerprint = excluded.fingerprint)
	RETURNING true, r.key, r.state, r.fingerprint, r.owner, r.fence, r.lease_until, r.created, r.response, r.request, r.seq, r.attempts
)
SELECT * FROM ins
UNION ALL
SELECT false, ` + recordColumns + ` FROM cur WHERE NOT EXISTS (SELECT 1 FROM ins)
	AND NOT (state = 1 AND lease_until <= now() AND fingerprint = $2)`

// held is the condition of the owner-conditional statements: $1 key,
// $2 owner, $3 fence.
const held = `key = $1 AND state = 1 AND owner = $2 AND fence = $3 AND expires > now()`

// extendSQL: $4 lease, $5 in-flight grace.
const extendSQL = `WITH u AS (
	UPDATE $T SET
		lease_until = now() + $4::interval,
		expires = CASE WHEN request IS NULL THEN now() + $4::interval + $5::interval
			ELSE greatest(expires, now() + $4::interval) END
	WHERE ` + held + `
	RETURNING 1
)
SELECT count(*) FROM u`

// completeSQL: $4 encoded response, $5 ttl. The owner stays on the done
// row, so that a retried completion (same owner and fence) is told from
// another's: it counts, and changes nothing.
const completeSQL = `WITH u AS (
	UPDATE $T SET state = 2, lease_until = NULL, response = $4, request = NULL,
		expires = now() + $5::interval
	WHERE ` + held + `
	RETURNING 1
)
SELECT (SELECT count(*) FROM u) + (SELECT count(*) FROM $T
	WHERE key = $1 AND state = 2 AND owner = $2 AND fence = $3 AND expires > now()
	AND NOT EXISTS (SELECT 1 FROM u))`

// requeueSQL returns a claimed queued request to the queue in its place
// with one more attempt.
const requeueSQL = `WITH u AS (
	UPDATE $T SET state = 3, owner = '', lease_until = NULL, attempts = attempts + 1
	WHERE ` + held + ` AND request IS NOT NULL
	RETURNING 1
)
SELECT count(*) FROM u`

// releaseSQL deletes the row, or returns a queued request to the queue in
// its place (its seq is kept).
const releaseSQL = `WITH d AS (
	DELETE FROM $T WHERE ` + held + ` AND request IS NULL
	RETURNING 1
), u AS (
	UPDATE $T SET state = 3, owner = '', lease_until = NULL
	WHERE ` + held + ` AND request IS NOT NULL
	RETURNING 1
)
SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM u)`

// getSQL: $1 key.
const getSQL = `SELECT false, ` + recordColumns + ` FROM $T WHERE key = $1 AND expires > now()`

// enqueueSQL: $1 key, $2 fingerprint, $3 encoded request, $4 ttl. A row in
// the snapshot is answered as it is; otherwise the insert takes an expired
// row's place. Like claimSQL, an empty answer means "run again".
const enqueueSQL = `WITH cur AS (
	SELECT ` + recordColumns + ` FROM $T WHERE key = $1 AND expires > now()
), ins AS (
	INSERT INTO $T AS r (key, state, fingerprint, created, expires, request)
	SELECT $1, 3, $2, now(), now() + $4::interval, $3
	WHERE NOT EXISTS (SELECT 1 FROM cur)
	ON CONFLICT (key) DO UPDATE SET
		state = 3, fingerprint = excluded.fingerprint, owner = '', lease_until = NULL,
		created = now(), expires = excluded.expires, response = NULL,
		request = excluded.request, seq = excluded.seq, attempts = 0
	WHERE r.expires <= now()
	RETURNING true, r.key, r.state, r.fingerprint, r.owner, r.fence, r.lease_until, r.created, r.response, r.request, r.seq, r.attempts
)
SELECT * FROM ins
UNION ALL
SELECT false, ` + recordColumns + ` FROM cur WHERE NOT EXISTS (SELECT 1 FROM ins)`

// claimQueuedSQL: $1 owner, $2 lease, $3 limit. Queued rows, and rows of a
// replay whose lease expired, oldest first; rows another replayer is
// claiming are skipped.
const claimQueuedSQL = `WITH c AS (
	SELECT key FROM $T
	WHERE request IS NOT NULL AND expires > now()
	  AND (state = 3 OR (state = 1 AND lease_until <= now()))
	ORDER BY seq
	LIMIT $3
	FOR UPDATE SKIP LOCKED
)
UPDATE $T AS r SET state = 1, owner = $1, fence = r.fence + 1,
	lease_until = now() + $2::interval, expires = greatest(r.expires, now() + $2::interval)
FROM c WHERE r.key = c.key
RETURNING true, r.key, r.state, r.fingerprint, r.owner, r.fence, r.lease_until, r.created, r.response, r.request, r.seq, r.attempts`

// sweepSQL: $1 batch.
const sweepSQL = `DELETE FROM $T WHERE key IN (
	SELECT key FROM $T WHERE expires <= now() LIMIT $1 FOR UPDATE SKIP LOCKED
)`
