package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/recordcodec"
)

// Config configures a Store.
type Config struct {
	// Prefix starts every key the store writes, so several stores (or
	// several services) can share one Redis. It must not contain '{' or '}'
	// (the queue keys use it as a Redis Cluster hash tag). If empty,
	// "holdfast:idem".
	Prefix string

	// InFlightGrace is how long an in-flight record outlives its lease
	// before Redis expires it, so that a late duplicate still finds it and
	// takes it over with a higher fence. If zero, one minute.
	InFlightGrace time.Duration
}

// Timings of the queue index; see the package doc.
const (
	// maxAllocAge is how old a queue member may be when Enqueue creates the
	// record it points at.
	maxAllocAge = 30 * time.Second
	// garbageAge is the age after which ClaimQueued removes a member whose
	// record does not exist (or is not its own). It must exceed maxAllocAge.
	garbageAge = 60 * time.Second
	// queuePage is how many queue members ClaimQueued reads at once.
	queuePage = 64
)

// Store is an idempotency.Store on Redis (a single server, Sentinel, or
// Cluster; see the package doc for the cluster layout). It is safe for
// concurrent use by many goroutines and many processes sharing the same
// Redis and Prefix. It does not own the client: closing it is the caller's.
type Store struct {
	client redis.UniversalClient
	prefix string
	grace  time.Duration
	qseq   string // queue sequence counter
	qkey   string // queue index (sorted set)

	claim, extend, complete, release, requeue, enqueue, alloc, claimQueued *redis.Script
}

var _ idempotency.Store = (*Store)(nil)

// New returns a Store on client configured by cfg. It panics if client is
// nil or cfg.Prefix contains a brace.
func New(client redis.UniversalClient, cfg Config) *Store {
	if client == nil {
		panic("redisstore: nil client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "holdfast:idem"
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		panic("redisstore: Prefix must not contain '{' or '}'")
	}
	if cfg.InFlightGrace <= 0 {
		cfg.InFlightGrace = time.Minute
	}
	return &Store{
		client:      client,
		prefix:      cfg.Prefix,
		grace:       cfg.InFlightGrace,
		qseq:        "{" + cfg.Prefix + "}:qseq",
		qkey:        "{" + cfg.Prefix + "}:queue",
		claim:       redis.NewScript(claimLua),
		extend:      redis.NewScript(extendLua),
		complete:    redis.NewScript(completeLua),
		release:     redis.NewScript(releaseLua),
		requeue:     redis.NewScript(requeueLua),
		enqueue:     redis.NewScript(enqueueLua),
		alloc:       redis.NewScript(allocLua),
		claimQueued: redis.NewScript(claimQueuedLua),
	}
}

// Load loads the store's scripts into the server's script cache (of every
// master, for a cluster client), so that no request pays the EVALSHA miss.
// It is optional: a script missing from the cache is loaded on first use.
func (s *Store) Load(ctx context.Context) error {
	for _, sc := range []*redis.Script{s.claim, s.extend, s.complete, s.release, s.requeue, s.enqueue, s.alloc, s.claimQueued} {
		if err := sc.Load(ctx, s.client).Err(); err != nil {
			return fmt.Errorf("redisstore: load scripts: %w", err)
		}
	}
	return nil
}

func (s *Store) recordKey(key string) string { return s.prefix + ":r:" + key }

// ms converts d to whole milliseconds, at least 1.
func ms(d time.Duration) int64 {
	return max(1, int64((d+time.Millisecond-1)/time.Millisecond))
}

// Claim implements idempotency.Store.
func (s *Store) Claim(ctx context.Context, key, fingerprint, owner string, lease time.Duration) (idempotency.Record, bool, error) {
	v, err := s.claim.Run(ctx, s.client, []string{s.recordKey(key)}, fingerprint, owner, ms(lease), ms(s.grace)).Slice()
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("redisstore: claim: %w", err)
	}
	flag, rec, err := parseReply(v)
	if err != nil {
		return idempotency.Record{}, false, err
	}
	// A claim that the client library retried after a lost reply finds the
	// record already ours: owners are unique per request.
	claimed := flag == 1 || (rec.State == idempotency.StateInFlight && rec.Owner == owner && rec.Fingerprint == fingerprint)
	return rec, claimed, nil
}

// Extend implements idempotency.Store.
func (s *Store) Extend(ctx context.Context, key, owner string, fence uint64, lease time.Duration) error {
	return s.conditional(ctx, "extend", s.extend, key, owner, fence, ms(lease), ms(s.grace))
}

// Complete implements idempotency.Store.
func (s *Store) Complete(ctx context.Context, key, owner string, fence uint64, resp idempotency.Response, ttl time.Duration) error {
	enc := recordcodec.EncodeResponse(resp.Status, resp.Header, resp.Body)
	return s.conditional(ctx, "complete", s.complete, key, owner, fence, enc, ms(ttl))
}

// Release implements idempotency.Store.
func (s *Store) Release(ctx context.Context, key, owner string, fence uint64) error {
	return s.conditional(ctx, "release", s.release, key, owner, fence)
}

// Requeue implements idempotency.Store.
func (s *Store) Requeue(ctx context.Context, key, owner string, fence uint64) error {
	return s.conditional(ctx, "requeue", s.requeue, key, owner, fence)
}

func (s *Store) conditional(ctx context.Context, op string, sc *redis.Script, key, owner string, fence uint64, args ...any) error {
	all := append([]any{owner, strconv.FormatUint(fence, 10)}, args...)
	n, err := sc.Run(ctx, s.client, []string{s.recordKey(key)}, all...).Int()
	if err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	if n != 1 {
		return idempotency.ErrNotOwner
	}
	return nil
}

// Get implements idempotency.Store. It is one HMGET.
func (s *Store) Get(ctx context.Context, key string) (idempotency.Record, bool, error) {
	v, err := s.client.HMGet(ctx, s.recordKey(key), "st", "fp", "ow", "fe", "lu", "cr", "rs", "rq", "sq", "at").Result()
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("redisstore: get: %w", err)
	}
	if v[0] == nil {
		return idempotency.Record{}, false, nil
	}
	rec, err := parseRecord(v[:8], v[9])
	if err != nil {
		return idempotency.Record{}, false, err
	}
	return rec, true, nil
}

// Enqueue implements idempotency.Store. A duplicate costs one round trip, a
// new request three: look, append to the queue index, create the record.
func (s *Store) Enqueue(ctx context.Context, key, fingerprint string, req idempotency.Request, ttl time.Duration) (idempotency.Record, bool, error) {
	rk := s.recordKey(key)
	enc := recordcodec.EncodeRequest(toCodec(req))
	run := func(member, allocMs string) (int64, idempotency.Record, string, error) {
		v, err := s.enqueue.Run(ctx, s.client, []string{rk}, fingerprint, enc, ms(ttl), member, allocMs, maxAllocAge.Milliseconds()).Slice()
		if err != nil {
			return 0, idempotency.Record{}, "", fmt.Errorf("redisstore: enqueue: %w", err)
		}
		return parseReplySeq(v)
	}
	flag, rec, _, err := run("", "0")
	if err != nil || flag == 0 {
		return rec, false, err
	}
	for range 2 {
		member, err := s.alloc.Run(ctx, s.client, []string{s.qseq, s.qkey}, key).Text()
		if err != nil {
			return idempotency.Record{}, false, fmt.Errorf("redisstore: enqueue: %w", err)
		}
		_, allocMs, _, ok := parseMember(member)
		if !ok {
			return idempotency.Record{}, false, fmt.Errorf("redisstore: enqueue: bad queue member %q", member)
		}
		var sq string
		flag, rec, sq, err = run(member, strconv.FormatInt(allocMs, 10))
		if err != nil {
			return idempotency.Record{}, false, err
		}
		switch flag {
		case 1:
			return rec, true, nil
		case 0:
			// A retried create finds its own record.
			return rec, rec.State == idempotency.StateQueued && sq == member, nil
		}
		// 3: the member was allocated too long ago (a pause); take another.
	}
	return idempotency.Record{}, false, errors.New("redisstore: enqueue: queue member expired twice")
}

// ClaimQueued implements idempotency.Store. It walks the queue index in
// order, a page at a time (by score, so concurrent removals shift nothing),
// and claims records with one pipelined script call per candidate; members
// that point at nothing (completed, expired or never created) are removed on
// the way.
func (s *Store) ClaimQueued(ctx context.Context, owner string, lease time.Duration, limit int) ([]idempotency.Queued, error) {
	if limit <= 0 {
		return nil, nil
	}
	var (
		out     []idempotency.Queued
		garbage []any
	)
	defer func() {
		if len(garbage) > 0 {
			// Best effort: a member left behind is removed next time.
			_ = s.client.ZRem(context.WithoutCancel(ctx), s.qkey, garbage...).Err()
		}
	}()
	after := "-inf"
	for len(out) < limit {
		page, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: s.qkey, ByScore: true, Start: after, Stop: "+inf", Count: queuePage,
		}).Result()
		if err != nil {
			return out, fmt.Errorf("redisstore: claim queued: %w", err)
		}
		if len(page) == 0 {
			break
		}
		for i := 0; i < len(page) && len(out) < limit; {
			batch := page[i:min(len(page), i+limit-len(out))]
			i += len(batch)
			results, err := s.claimBatch(ctx, owner, lease, batch)
			if err != nil {
				return out, err
			}
			for j, r := range results {
				switch r.flag {
				case 1:
					out = append(out, idempotency.Queued{Key: r.key, Record: r.rec})
				case 2:
					garbage = append(garbage, batch[j])
				}
			}
		}
		seq, _, _, _ := parseMember(page[len(page)-1])
		after = "(" + strconv.FormatUint(seq, 10)
		if len(page) < queuePage {
			break
		}
	}
	return out, nil
}

type claimResult struct {
	flag int64
	key  string
	rec  idempotency.Record
}

// claimBatch runs claimQueuedLua for every member in one pipeline.
func (s *Store) claimBatch(ctx context.Context, owner string, lease time.Duration, members []string) ([]claimResult, error) {
	results := make([]claimResult, len(members))
	run := func() ([]*redis.Cmd, error) {
		cmds := make([]*redis.Cmd, len(members))
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range members {
				_, allocMs, key, ok := parseMember(m)
				if !ok {
					allocMs, key = 0, "" // garbage: the script finds no record
				}
				results[i].key = key
				cmds[i] = s.claimQueued.EvalSha(ctx, p, []string{s.recordKey(key)},
					m, owner, ms(lease), allocMs, garbageAge.Milliseconds())
			}
			return nil
		})
		return cmds, err
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// EVALSHA that missed ran nothing: load the script and run again.
		if err := s.claimQueued.Load(ctx, s.client).Err(); err != nil {
			return nil, fmt.Errorf("redisstore: claim queued: %w", err)
		}
		cmds, err = run()
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim queued: %w", err)
	}
	for i, c := range cmds {
		v, err := c.Slice()
		if err != nil {
			return nil, fmt.Errorf("redisstore: claim queued: %w", err)
		}
		flag, rec, _, err := parseReplySeq(v)
		if err != nil {
			return nil, err
		}
		results[i].flag, results[i].rec = flag, rec
	}
	return results, nil
}

// parseMember splits a queue member "<seq>:<alloc ms>:<key>".
func parseMember(m string) (seq uint64, allocMs int64, key string, ok bool) {
	a, rest, ok1 := strings.Cut(m, ":")
	b, key, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return 0, 0, "", false
	}
	seq, err1 := strconv.ParseUint(a, 10, 64)
	allocMs, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, "", false
	}
	return seq, allocMs, key, true
}

// parseReply parses a script's {flag, record fields...} answer.
func parseReply(v []any) (int64, idempotency.Record, error) {
	flag, rec, _, err := parseReplySeq(v)
	return flag, rec, err
}

func parseReplySeq(v []any) (flag int64, rec idempotency.Record, sq string, err error) {
	if len(v) == 0 {
		return 0, rec, "", errors.New("redisstore: empty script reply")
	}
	flag, ok := v[0].(int64)
	if !ok {
		return 0, rec, "", fmt.Errorf("redisstore: bad script reply %T", v[0])
	}
	if len(v) == 1 {
		return flag, rec, "", nil
	}
	if len(v) != 11 {
		return 0, rec, "", fmt.Errorf("redisstore: script reply of %d values", len(v))
	}
	if v[1] == nil { // no record
		return flag, rec, "", nil
	}
	sq, _ = v[9].(string)
	rec, err = parseRecord(v[1:9], v[10])
	return flag, rec, sq, err
}

// parseRecord parses the values of st, fp, ow, fe, lu, cr, rs, rq, and at.
func parseRecord(v []any, at any) (idempotency.Record, error) {
	str := func(i int) string { s, _ := v[i].(string); return s }
	var rec idempotency.Record
	st, err := strconv.ParseUint(str(0), 10, 8)
	if err != nil || st < 1 || st > 3 {
		return rec, fmt.Errorf("redisstore: corrupt record state %q", str(0))
	}
	rec.State = idempotency.State(st)
	rec.Fingerprint = str(1)
	rec.Owner = str(2)
	if f := str(3); f != "" {
		if rec.Fence, err = strconv.ParseUint(f, 10, 64); err != nil {
			return rec, fmt.Errorf("redisstore: corrupt fence %q", f)
		}
	}
	if rec.LeaseUntil, err = micros(str(4)); err != nil {
		return rec, err
	}
	if rec.Created, err = micros(str(5)); err != nil {
		return rec, err
	}
	if rs, ok := v[6].(string); ok {
		status, header, body, err := recordcodec.DecodeResponse([]byte(rs))
		if err != nil {
			return rec, fmt.Errorf("redisstore: stored response: %w", err)
		}
		rec.Response = &idempotency.Response{Status: status, Header: header, Body: body}
	}
	if rq, ok := v[7].(string); ok {
		q, err := recordcodec.DecodeRequest([]byte(rq))
		if err != nil {
			return rec, fmt.Errorf("redisstore: stored request: %w", err)
		}
		rec.Request = fromCodec(q)
	}
	if a, ok := at.(string); ok && a != "" {
		n, err := strconv.ParseUint(a, 10, 31)
		if err != nil {
			return rec, fmt.Errorf("redisstore: corrupt attempts %q", a)
		}
		rec.Attempts = int(n)
	}
	return rec, nil
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

func micros(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("redisstore: corrupt time %q", s)
	}
	return time.UnixMicro(n), nil
}
