// Package idempotency provides the Idempotency-Key header (IETF httpapi
// draft "The Idempotency-Key HTTP Header Field") for net/http: a server
// middleware that runs the first request with a key and replays its
// response to every duplicate, a queue for writes accepted during an outage,
// and a client Transport that adds keys so that retries are safe.
//
// # Server
//
//	x := idempotency.New(idempotency.Config{
//		Store: idempotency.NewMemoryStore(idempotency.MemoryConfig{}),
//	})
//	mux.Handle("POST /orders", verifier.Handler(x.Handler(createOrder)))
//
// Put it behind authentication (authfallback's Verifier.Handler): records
// are then scoped by the verified caller.
//
// For a guarded request (POST and PATCH by default) that carries an
// Idempotency-Key, [Idempotency.Handler]:
//
//   - parses the key: an RFC 9651 string ("...") or the same characters
//     unquoted, at most 255 characters, exactly one header line; otherwise
//     400. Without a key the request passes, or gets 400 if RequireKey;
//   - reads the body (at most MaxRequestBytes, else 413; memory grows as
//     bytes arrive, never by the announced Content-Length) and computes the
//     record key, a SHA-256 of the caller's scope, the method, the route and
//     the key, and the fingerprint, a SHA-256 of the method, path, query and
//     body;
//   - claims the record key in the [Store] under a lease (60 s) with an owner
//     token and a fencing counter. The first request runs; its response is
//     buffered (status, body up to MaxResponseBytes, 1 MiB) and stored for
//     TTL (24 h) with the allow-listed headers (never Set-Cookie, never
//     hop-by-hop) before the client sees it; duplicates get it replayed with
//     "Idempotent-Replayed: true". A duplicate while it runs gets 409 with
//     Retry-After; the same key with another fingerprint gets 422;
//   - renews the lease every third of it while the handler runs, and stores
//     the response only if it still holds the claim (owner and fence): a
//     request that lost its claim never overwrites another's response;
//   - releases the claim, so the client may retry with the same key, when
//     the status is not one to store (by default 408, 409, 425, 429, 5xx),
//     when the handler panics (released on a detached context, then the
//     panic goes on), when it streams (Flush), hijacks the connection or
//     writes more than MaxResponseBytes: such a response is passed through
//     to the client, never stored in part. OnRelease says why;
//   - refuses with 503 and Retry-After when the store fails, unless FailOpen:
//     nothing ran, the client retries with the same key. A done record it
//     cannot replay (a shared store holds what others wrote: no response, a
//     status outside 200-999) gets 503 too and never runs again; replayed
//     headers are filtered like stored ones.
//
// A process that dies between claim and completion leaves a claim that
// expires with its lease; the next request with the key and the same
// fingerprint takes it over (the fence increases) and runs.
//
// Every error answer is application/problem+json (RFC 9457, or what
// Config.WriteProblem writes) with a stable type, exported as the Problem
// constants: idempotency-key-missing, idempotency-key-invalid,
// idempotency-body-unreadable (400), idempotency-body-too-large (413),
// idempotency-key-in-use (409), idempotency-key-reused (422),
// idempotency-scope-missing (500), idempotency-store-unavailable and
// idempotency-not-queued (503); a queued request's stored outcome may be
// idempotency-replay-failed (500) or idempotency-replay-refused (403).
// Config.OnOutcome reports every decision (first, replay, conflict,
// mismatch, queued, replayed, failed, store-error).
//
// The handler's response is stored before the client sees it. A store that
// fails at that moment (the handler ran) does not make a retry run it again:
// the completion is retried in the background while the lease is renewed
// (duplicates get 409 meanwhile), for up to five leases; [Store.Complete] is
// idempotent, so a completion whose answer was lost is not mistaken for a
// lost claim.
//
// # Scope
//
// Stored responses belong to the caller who caused them: the record key
// includes the caller's scope, so no one can replay another caller's
// response by guessing or stealing a key. By default the scope is the
// verified caller that authfallback's Handler put in the request context
// (issuer and subject): a client that refreshed its token between two
// attempts gets its response replayed, and two subjects never share a
// record. A service with other authentication sets Config.Scope (the tenant
// and subject, say). When neither is known, the scope falls back to the
// caller's credentials (the Authorization and Cookie headers, hashed): safe,
// but a refreshed token then gets a new scope and its retry runs again.
//
// # Queued writes
//
// During an outage a gate (e.g. the degrade package) can hand writes, once
// authenticated, to [Idempotency.Enqueue], which stores the request with the
// authorization decision taken for it (issuer, subject, granted scopes,
// degraded reason: a [Caller]) and answers 202 Accepted. Its credentials are
// never stored in plaintext: stripped, or sealed with Config.Seal (an AEAD
// the service provides), and gone once the request has run. A [Replayer]
// runs the queued requests as their recorded caller when the service can
// take them: on Kick (from degrade's OnModeChange), every Interval, and,
// while the dependency is down, by half-open trials (one request at a time)
// whose success says the dependency is back, so the service recovers without
// client traffic. It bounds its concurrency, counts failed replays in the
// store and, after MaxAttempts, stores a 500 idempotency-replay-failed as
// the outcome: nothing waits forever and nothing is dropped in silence.
// Several replicas may each run one over a shared store; each request runs
// once. A client that sends the request again with the same key (and any
// token of the same caller) gets 202 until it ran and its outcome after;
// another caller gets nothing of it.
//
// A 202 is as durable as the store: the memory store loses queued requests
// with the process, Redis keeps them only with persistence (appendonly yes),
// PostgreSQL once committed (see the redisstore and pgstore packages).
//
// # Client
//
// [Transport] adds a fresh random key to POST and PATCH requests without one,
// above a retrying transport, so every retry of a request carries the same
// key.
//
// # Stores
//
// [NewMemoryStore] keeps records in memory for a single instance; the
// redisstore and pgstore modules share them between replicas. Every store
// passes the conformance suite in idempotency/storetest (Run) and its
// two-instance end-to-end checks over real HTTP (RunHTTP).
//
// Idempotency, Replayer, MemoryStore and Transport are safe for concurrent
// use. Hooks (On...) may be called concurrently and must not block.
package idempotency
