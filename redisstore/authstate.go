package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/authfallback"
)

// AuthStateConfig configures an AuthState.
type AuthStateConfig struct {
	// Prefix starts every key the store writes. It must not contain '{'
	// or '}'. If empty, "holdfast:auth".
	Prefix string
}

// AuthState is an authfallback.StateStore on Redis: the outage state (key
// set, tokens seen valid, degraded acceptances) that the Verifiers of a
// fleet share. It is safe for concurrent use by many goroutines and many
// processes sharing the same Redis and Prefix. It does not own the client.
//
// Keys (issuer is the hex SHA-256 of the issuer, first 16 bytes):
//
//	{Prefix:issuer}:keys           hash  at (unix µs), doc          no expiry
//	Prefix:seen:<token hash>       string (JSON)                    expires with the record
//	{Prefix:issuer}:deg:<hash>     hash  doc (JSON), count, first, last, exp
//	{Prefix:issuer}:degidx         set of token hashes (the index TakeDegraded pops)
//
// The keys of one issuer share a hash tag, so every script runs on one
// Redis Cluster slot. SaveKeys, AddDegraded (per record) and TakeDegraded
// are Lua scripts, hence atomic: an older key set never replaces a newer
// one, and two replicas never take the same degraded record (SPOP).
type AuthState struct {
	client redis.UniversalClient
	prefix string

	saveKeys, addDegraded, takeDegraded *redis.Script
}

var _ authfallback.StateStore = (*AuthState)(nil)

// NewAuthState returns an AuthState on client. It panics if client is nil
// or cfg.Prefix contains a brace.
func NewAuthState(client redis.UniversalClient, cfg AuthStateConfig) *AuthState {
	if client == nil {
		panic("redisstore: nil client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "holdfast:auth"
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		panic("redisstore: Prefix must not contain '{' or '}'")
	}
	return &AuthState{
		client: client, prefix: cfg.Prefix,
		saveKeys:     redis.NewScript(saveKeysLua),
		addDegraded:  redis.NewScript(addDegradedLua),
		takeDegraded: redis.NewScript(takeDegradedLua),
	}
}

func (s *AuthState) tag(issuer string) string {
	h := sha256.Sum256([]byte(issuer))
	return "{" + s.prefix + ":" + hex.EncodeToString(h[:16]) + "}"
}

func micro(t time.Time) int64 { return t.UnixMicro() }

func fromMicro(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMicro(n), nil
}

const saveKeysLua = `
local cur = redis.call('HGET', KEYS[1], 'at')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'doc', ARGV[2], 'iss', ARGV[3])
return 1
`

// LoadKeys implements authfallback.StateStore.
func (s *AuthState) LoadKeys(ctx context.Context, issuer string) (authfallback.KeySetRecord, bool, error) {
	v, err := s.client.HMGet(ctx, s.tag(issuer)+":keys", "at", "doc").Result()
	if err != nil {
		return authfallback.KeySetRecord{}, false, fmt.Errorf("redisstore: load keys: %w", err)
	}
	at, ok1 := v[0].(string)
	doc, ok2 := v[1].(string)
	if !ok1 || !ok2 {
		return authfallback.KeySetRecord{}, false, nil
	}
	t, err := fromMicro(at)
	if err != nil {
		return authfallback.KeySetRecord{}, false, fmt.Errorf("redisstore: load keys: corrupt record: %w", err)
	}
	return authfallback.KeySetRecord{Issuer: issuer, FetchedAt: t, Doc: []byte(doc)}, true, nil
}

// SaveKeys implements authfallback.StateStore.
func (s *AuthState) SaveKeys(ctx context.Context, rec authfallback.KeySetRecord) (bool, error) {
	if err := authfallback.CheckKeySetRecord(rec); err != nil {
		return false, err
	}
	n, err := s.saveKeys.Run(ctx, s.client, []string{s.tag(rec.Issuer) + ":keys"}, micro(rec.FetchedAt), rec.Doc, rec.Issuer).Int()
	if err != nil {
		return false, fmt.Errorf("redisstore: save keys: %w", err)
	}
	return n == 1, nil
}

// seenDoc is the stored form of a SeenToken.
type seenDoc struct {
	Issuer    string `json:"i"`
	SeenAt    int64  `json:"s"`
	ExpiresAt int64  `json:"e"`
	Expires   int64  `json:"x"`
}

// AddSeen implements authfallback.StateStore: one pipelined SET NX with
// an expiry per record.
func (s *AuthState) AddSeen(ctx context.Context, recs []authfallback.SeenToken) error {
	now := time.Now()
	pipe := s.client.Pipeline()
	n := 0
	for _, r := range recs {
		if r.TokenHash == "" {
			return authfallback.ErrStateRecord
		}
		if !r.Expires.After(now) {
			continue
		}
		b, _ := json.Marshal(seenDoc{Issuer: r.Issuer, SeenAt: micro(r.SeenAt), ExpiresAt: micro(r.ExpiresAt), Expires: micro(r.Expires)})
		pipe.SetArgs(ctx, s.prefix+":seen:"+r.TokenHash, b, redis.SetArgs{Mode: "NX", TTL: max(time.Millisecond, time.Until(r.Expires).Truncate(time.Millisecond))})
		n++
	}
	if n == 0 {
		return nil
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redisstore: add seen: %w", err)
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("redisstore: add seen: %w", err)
		}
	}
	return nil
}

// Seen implements authfallback.StateStore.
func (s *AuthState) Seen(ctx context.Context, hash string) (authfallback.SeenToken, bool, error) {
	b, err := s.client.Get(ctx, s.prefix+":seen:"+hash).Bytes()
	if errors.Is(err, redis.Nil) {
		return authfallback.SeenToken{}, false, nil
	}
	if err != nil {
		return authfallback.SeenToken{}, false, fmt.Errorf("redisstore: seen: %w", err)
	}
	var d seenDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return authfallback.SeenToken{}, false, fmt.Errorf("redisstore: seen: corrupt record: %w", err)
	}
	rec := authfallback.SeenToken{
		TokenHash: hash, Issuer: d.Issuer, SeenAt: time.UnixMicro(d.SeenAt),
		ExpiresAt: time.UnixMicro(d.ExpiresAt), Expires: time.UnixMicro(d.Expires),
	}
	if !rec.Expires.After(time.Now()) {
		return authfallback.SeenToken{}, false, nil
	}
	return rec, true, nil
}

// degradedDoc is the stored form of the fixed fields of a
// DegradedAcceptance.
type degradedDoc struct {
	Subject         string   `json:"sub,omitempty"`
	ID              string   `json:"jti,omitempty"`
	IssuedAt        int64    `json:"iat,omitempty"`
	ExpiresAt       int64    `json:"exp,omitempty"`
	KeyID           string   `json:"kid,omitempty"`
	KeyFingerprint  string   `json:"fp,omitempty"`
	Reason          string   `json:"reason,omitempty"`
	Scopes          []string `json:"scopes,omitempty"`
	PrimaryID       string   `json:"pjti,omitempty"`
	PrimaryIssuedAt int64    `json:"piat,omitempty"`
}

func microOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func timeOrZero(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}

// KEYS[1] record, KEYS[2] index; ARGV doc, count, first, last, exp (µs), member.
const addDegradedLua = `
local first = redis.call('HGET', KEYS[1], 'first')
local exp = tonumber(ARGV[5])
if not first then
  redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'count', ARGV[2], 'first', ARGV[3], 'last', ARGV[4], 'exp', ARGV[5])
else
  redis.call('HINCRBY', KEYS[1], 'count', ARGV[2])
  if tonumber(ARGV[3]) < tonumber(first) then redis.call('HSET', KEYS[1], 'first', ARGV[3]) end
  local last = redis.call('HGET', KEYS[1], 'last')
  if not last or tonumber(ARGV[4]) > tonumber(last) then redis.call('HSET', KEYS[1], 'last', ARGV[4]) end
  local cur = tonumber(redis.call('HGET', KEYS[1], 'exp') or '0')
  if exp > cur then redis.call('HSET', KEYS[1], 'exp', ARGV[5]) else exp = cur end
end
local expms = math.floor(exp / 1000)
redis.call('PEXPIREAT', KEYS[1], expms)
redis.call('SADD', KEYS[2], ARGV[6])
local ttl = redis.call('PTTL', KEYS[2])
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ttl < 0 or nowms + ttl < expms then redis.call('PEXPIREAT', KEYS[2], expms) end
return 1
`

// KEYS[1] index; ARGV limit, record key prefix. Returns member, doc,
// count, first, last, exp for each record taken.
const takeDegradedLua = `
local limit = tonumber(ARGV[1])
local out = {}
local n = 0
while n < limit do
  local ms = redis.call('SPOP', KEYS[1], limit - n)
  if #ms == 0 then break end
  for _, m in ipairs(ms) do
    local k = ARGV[2] .. m
    local v = redis.call('HMGET', k, 'doc', 'count', 'first', 'last', 'exp')
    redis.call('DEL', k)
    if v[1] then
      table.insert(out, m)
      for i = 1, 5 do table.insert(out, v[i]) end
      n = n + 1
    end
  end
end
return out
`

// AddDegraded implements authfallback.StateStore: one script per record,
// pipelined.
func (s *AuthState) AddDegraded(ctx context.Context, recs []authfallback.DegradedAcceptance) error {
	now := time.Now()
	type call struct {
		keys []string
		args []any
	}
	var calls []call
	for _, r := range recs {
		if r.TokenHash == "" || r.Issuer == "" {
			return authfallback.ErrStateRecord
		}
		if !r.Expires.After(now) {
			continue
		}
		doc, _ := json.Marshal(degradedDoc{
			Subject: r.Subject, ID: r.ID, IssuedAt: microOrZero(r.IssuedAt), ExpiresAt: microOrZero(r.ExpiresAt),
			KeyID: r.KeyID, KeyFingerprint: r.KeyFingerprint, Reason: r.Reason, Scopes: r.Scopes,
			PrimaryID: r.PrimaryID, PrimaryIssuedAt: microOrZero(r.PrimaryIssuedAt),
		})
		tag := s.tag(r.Issuer)
		calls = append(calls, call{
			keys: []string{tag + ":deg:" + r.TokenHash, tag + ":degidx"},
			args: []any{doc, r.Count, micro(r.FirstAccepted), micro(r.LastAccepted), micro(r.Expires), r.TokenHash},
		})
	}
	if len(calls) == 0 {
		return nil
	}
	run := func() error {
		pipe := s.client.Pipeline()
		for _, c := range calls {
			s.addDegraded.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A pipelined EVALSHA does not fall back to EVAL; no script ran
		// (they all miss alike): load it and run the batch again.
		if err = s.addDegraded.Load(ctx, s.client).Err(); err == nil {
			err = run()
		}
	}
	if err != nil {
		return fmt.Errorf("redisstore: add degraded: %w", err)
	}
	return nil
}

// Load loads the AuthState's scripts into the server's script cache. It is
// optional: a script missing from the cache is loaded on first use.
func (s *AuthState) Load(ctx context.Context) error {
	for _, sc := range []*redis.Script{s.saveKeys, s.addDegraded, s.takeDegraded} {
		if err := sc.Load(ctx, s.client).Err(); err != nil {
			return fmt.Errorf("redisstore: load scripts: %w", err)
		}
	}
	return nil
}

// TakeDegraded implements authfallback.StateStore.
func (s *AuthState) TakeDegraded(ctx context.Context, issuer string, limit int) ([]authfallback.DegradedAcceptance, error) {
	if limit <= 0 {
		return nil, nil
	}
	tag := s.tag(issuer)
	v, err := s.takeDegraded.Run(ctx, s.client, []string{tag + ":degidx"}, limit, tag+":deg:").Slice()
	if err != nil {
		return nil, fmt.Errorf("redisstore: take degraded: %w", err)
	}
	now := time.Now()
	var out []authfallback.DegradedAcceptance
	for i := 0; i+5 < len(v); i += 6 {
		r, err := parseDegraded(issuer, v[i:i+6])
		if err != nil {
			return out, fmt.Errorf("redisstore: take degraded: corrupt record: %w", err)
		}
		if r.Expires.After(now) {
			out = append(out, r)
		}
	}
	return out, nil
}

func parseDegraded(issuer string, v []any) (authfallback.DegradedAcceptance, error) {
	var f [6]string
	for i := range f {
		s, ok := v[i].(string)
		if !ok {
			return authfallback.DegradedAcceptance{}, fmt.Errorf("field %d missing", i)
		}
		f[i] = s
	}
	var d degradedDoc
	if err := json.Unmarshal([]byte(f[1]), &d); err != nil {
		return authfallback.DegradedAcceptance{}, err
	}
	count, err := strconv.Atoi(f[2])
	if err != nil {
		return authfallback.DegradedAcceptance{}, err
	}
	var ts [3]time.Time
	for i := range ts {
		if ts[i], err = fromMicro(f[3+i]); err != nil {
			return authfallback.DegradedAcceptance{}, err
		}
	}
	return authfallback.DegradedAcceptance{
		Issuer: issuer, TokenHash: f[0], Subject: d.Subject, ID: d.ID, IssuedAt: timeOrZero(d.IssuedAt),
		ExpiresAt: timeOrZero(d.ExpiresAt), KeyID: d.KeyID, KeyFingerprint: d.KeyFingerprint, Reason: d.Reason,
		Scopes: d.Scopes, PrimaryID: d.PrimaryID, PrimaryIssuedAt: timeOrZero(d.PrimaryIssuedAt),
		FirstAccepted: ts[0], LastAccepted: ts[1], Count: count, Expires: ts[2],
	}, nil
}
