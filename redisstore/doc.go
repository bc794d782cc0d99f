// Package redisstore provides an [idempotency.Store] on Redis (go-redis v9),
// so that several replicas of a service share their Idempotency-Key records.
//
//	client := redis.NewClient(&redis.Options{Addr: "redis:6379"})
//	store := redisstore.New(client, redisstore.Config{Prefix: "orders-api:idem"})
//	x := idempotency.New(idempotency.Config{Store: store})
//	mux.Handle("POST /orders", x.Handler(orders))
//
// It needs Redis 5 or newer (or a compatible server such as Valkey): the
// scripts read the server's time before they write.
//
// # Model
//
// Every operation on a record is one Lua script (EVALSHA, with the script
// loaded on first use or by [Store.Load]) that reads and writes a single
// hash, so it is atomic without MULTI/WATCH and without a lock that could be
// released by someone else. Leases use the Redis server's clock
// (redis.call('TIME')), never the replicas', so skewed replicas agree on
// when a lease has expired. Extend, Complete and Release are conditional on
// the owner token and the fencing counter of the claim: a request whose
// lease was taken over cannot complete, extend or delete the new owner's
// record ([idempotency.ErrNotOwner]).
//
// Round trips: a first request costs two (Claim, Complete), a replay one
// (Claim answers with the stored response), plus one Extend per third of the
// lease while a slow handler runs. Get is a single HMGET. A new queued
// request costs three (see below), a duplicate one.
//
// # Keys
//
//	<prefix>:r:<key>        hash, one per record:
//	                          st  state (1 in flight, 2 done, 3 queued)
//	                          fp  request fingerprint
//	                          ow  lease owner         (in flight; the completer once done)
//	                          fe  fence
//	                          lu  lease end, server µs (in flight)
//	                          cr  creation, server µs
//	                          rs  stored response     (done)
//	                          rq  queued request      (queued, and while replayed)
//	                          sq  its queue member    (queued records)
//	                          at  failed replays      (queued records, Requeue)
//	{<prefix>}:queue        sorted set, the queue index: member
//	                        "<seq>:<alloc ms>:<key>", score <seq>
//	{<prefix>}:qseq         counter for <seq>
//
// Responses and requests are stored in a compact binary encoding that keeps
// any byte of a header value or body. Expiry is Redis's own (PEXPIRE): an
// in-flight record lives for its lease plus [Config.InFlightGrace] (so a late
// duplicate can still take it over with a higher fence), a done or queued one
// for the handler's TTL, and a queued request being replayed at least as long
// as its replay lease. Nothing needs sweeping, except the queue index below.
//
// # Redis Cluster
//
// Every script touches exactly one key, so the store works on Redis Cluster
// (and with client-side sharding): records spread over all shards by their
// key. The two queue keys carry the hash tag {<prefix>}, so they live
// together in one slot, on one shard: queued writes (the degraded path) are
// not spread, and that shard must be up for Enqueue and Replay, not for the
// normal path. The prefix must therefore contain no braces; New panics
// otherwise.
//
// Because a record and the queue index may live on different shards, Enqueue
// is three steps, none of which can strand a queued request: it looks for an
// existing record; it appends a new member to the index; it creates the
// record pointing at that member, unless the member is more than 30 s old
// (a paused process) or a record appeared meanwhile. ClaimQueued walks the
// index in order and claims each record with a script that checks that the
// record still points at that member; members whose record completed are
// removed, and members whose record does not exist are removed once they are
// more than 60 s old (until then an Enqueue may still be creating it). Both
// ages are measured from the same stamp on the record's shard's clock, so
// clock skew between shards cannot make the two windows overlap.
//
// Tested for real: the conformance and end-to-end suites also run against
// a 3-node cluster on loopback (HOLDFAST_REDIS_CLUSTER_ADDRS, which .ci/run
// sets after starting one on ports 7001-7003).
//
// # Durability
//
// A write answered 202 Accepted during an outage (idempotency's Enqueue) is
// as durable as Redis: without persistence, a Redis restart loses every
// queued write. Run Redis with appendonly yes; appendfsync always loses none
// of them on a crash (tested: a redis-server killed with SIGKILL and
// restarted while writes wait loses none), the default everysec loses up to
// a second of them. With replicas, a failover may lose what the master had
// not replicated yet.
//
// Queued requests carry the verified caller recorded at Enqueue, never a
// plaintext bearer token or cookie (stripped, or sealed by the handler's
// Config.Seal); a completion deletes the request.
//
// # Concurrency
//
// A Store is safe for concurrent use by any number of goroutines and
// processes sharing the Redis and the prefix. It does not own the client.
// A client library that retries a command after a lost reply is tolerated:
// a retried Claim or Enqueue recognizes the record it created (owner tokens
// are unique per request).
package redisstore
