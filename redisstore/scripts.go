package redisstore

// The Lua scripts. Each touches exactly one key (KEYS[1]), so each runs on
// the node that owns the key's slot in Redis Cluster. Time is the server's:
// redis.call('TIME'), in microseconds. Numbers are written with %.0f because
// Lua's tostring switches to exponent notation above 1e14.
//
// A record is a hash with the fields
//
//	st  state: 1 in flight, 2 done, 3 queued
//	fp  request fingerprint
//	ow  owner of the lease (in flight), of the completion (done)
//	fe  fence, increased by every claim and takeover
//	lu  lease end, server microseconds (in flight only)
//	cr  creation, server microseconds
//	rs  encoded response (done only)
//	rq  encoded queued request (kept while a replay runs)
//	sq  the queue index member that points at this record (queued only)
//	at  failed replays of a queued request (Requeue)
//
// Every script that answers with a record ends with recordReply, which
// returns {flag, st, fp, ow, fe, lu, cr, rs, rq, sq, at}.

const luaPrelude = `
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(n) return string.format('%.0f', n) end
local function reply(flag, k)
  return {flag, unpack(redis.call('HMGET', k, 'st', 'fp', 'ow', 'fe', 'lu', 'cr', 'rs', 'rq', 'sq', 'at'))}
end
-- held reports whether the record is in flight under owner and fence.
local function held(k, owner, fence)
  local v = redis.call('HMGET', k, 'st', 'ow', 'fe')
  return v[1] == '1' and v[2] == owner and v[3] == fence
end
-- keep_for makes sure the record lives at least ms more.
local function keep_for(k, ms)
  local ttl = redis.call('PTTL', k)
  if ttl >= 0 and ttl < ms then redis.call('PEXPIRE', k, ms) end
end
`

// claimLua: ARGV fingerprint, owner, lease ms, in-flight grace ms.
const claimLua = luaPrelude + `
local k = KEYS[1]
local now = now_us()
local lease = tonumber(ARGV[3])
local v = redis.call('HMGET', k, 'st', 'fp', 'lu')
if not v[1] then
  redis.call('DEL', k)
  redis.call('HSET', k, 'st', '1', 'fp', ARGV[1], 'ow', ARGV[2], 'fe', '1',
    'lu', fmt(now + lease * 1000), 'cr', fmt(now))
  redis.call('PEXPIRE', k, lease + tonumber(ARGV[4]))
  return reply(1, k)
end
if v[1] == '1' and v[2] == ARGV[1] and tonumber(v[3]) <= now then
  redis.call('HSET', k, 'ow', ARGV[2], 'lu', fmt(now + lease * 1000))
  redis.call('HINCRBY', k, 'fe', 1)
  if redis.call('HEXISTS', k, 'rq') == 1 then keep_for(k, lease)
  else redis.call('PEXPIRE', k, lease + tonumber(ARGV[4])) end
  return reply(1, k)
end
return reply(0, k)
`

// extendLua: ARGV owner, fence, lease ms, in-flight grace ms.
const extendLua = luaPrelude + `
local k = KEYS[1]
if not held(k, ARGV[1], ARGV[2]) then return 0 end
local lease = tonumber(ARGV[3])
redis.call('HSET', k, 'lu', fmt(now_us() + lease * 1000))
if redis.call('HEXISTS', k, 'rq') == 1 then keep_for(k, lease)
else redis.call('PEXPIRE', k, lease + tonumber(ARGV[4])) end
return 1
`

// completeLua: ARGV owner, fence, encoded response, ttl ms. The owner stays
// on the done record, so that a retried completion is told from another's:
// it succeeds and changes nothing.
const completeLua = luaPrelude + `
local k = KEYS[1]
if not held(k, ARGV[1], ARGV[2]) then
  local v = redis.call('HMGET', k, 'st', 'ow', 'fe')
  if v[1] == '2' and v[2] == ARGV[1] and v[3] == ARGV[2] then return 1 end
  return 0
end
redis.call('HDEL', k, 'lu', 'rq')
redis.call('HSET', k, 'st', '2', 'rs', ARGV[3])
redis.call('PEXPIRE', k, tonumber(ARGV[4]))
return 1
`

// releaseLua: ARGV owner, fence.
const releaseLua = luaPrelude + `
local k = KEYS[1]
if not held(k, ARGV[1], ARGV[2]) then return 0 end
if redis.call('HEXISTS', k, 'rq') == 1 then
  redis.call('HDEL', k, 'ow', 'lu')
  redis.call('HSET', k, 'st', '3')
else
  redis.call('DEL', k)
end
return 1
`

// requeueLua: ARGV owner, fence. A queued request back in its place with
// one more attempt.
const requeueLua = luaPrelude + `
local k = KEYS[1]
if not held(k, ARGV[1], ARGV[2]) then return 0 end
if redis.call('HEXISTS', k, 'rq') == 0 then return 0 end
redis.call('HDEL', k, 'ow', 'lu')
redis.call('HSET', k, 'st', '3')
redis.call('HINCRBY', k, 'at', 1)
return 1
`

// enqueueLua: ARGV fingerprint, encoded request, ttl ms, queue member (""
// only looks), member's allocation time in server ms, maximum age ms.
// Flags: 0 exists, 1 created, 2 absent (look only), 3 member too old.
const enqueueLua = luaPrelude + `
local k = KEYS[1]
local st = redis.call('HGET', k, 'st')
if st then return reply(0, k) end
if ARGV[4] == '' then return {2} end
local now = now_us()
if now / 1000 - tonumber(ARGV[5]) > tonumber(ARGV[6]) then return {3} end
redis.call('DEL', k)
redis.call('HSET', k, 'st', '3', 'fp', ARGV[1], 'fe', '0', 'cr', fmt(now), 'rq', ARGV[2], 'sq', ARGV[4])
redis.call('PEXPIRE', k, tonumber(ARGV[3]))
return reply(1, k)
`

// allocLua: KEYS seq counter, queue; ARGV record key. It appends a member
// "<seq>:<server ms>:<key>" to the queue and returns it.
const allocLua = `
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('INCR', KEYS[1])
local m = n .. ':' .. string.format('%.0f', ms) .. ':' .. ARGV[1]
redis.call('ZADD', KEYS[2], n, m)
return m
`

// claimQueuedLua: ARGV queue member, owner, lease ms, member's allocation
// time in server ms, cleanup age ms. Flags: 1 claimed, 2 the member is
// garbage (remove it), 3 skip (busy or too young to judge).
const claimQueuedLua = luaPrelude + `
local k = KEYS[1]
local now = now_us()
local v = redis.call('HMGET', k, 'st', 'sq', 'lu')
if not v[1] or v[2] ~= ARGV[1] then
  if now / 1000 - tonumber(ARGV[4]) > tonumber(ARGV[5]) then return {2} end
  return {3}
end
if redis.call('HEXISTS', k, 'rq') == 0 then return {2} end
if v[1] == '3' or (v[1] == '1' and tonumber(v[3]) <= now) then
  local lease = tonumber(ARGV[3])
  redis.call('HSET', k, 'st', '1', 'ow', ARGV[2], 'lu', fmt(now + lease * 1000))
  redis.call('HINCRBY', k, 'fe', 1)
  keep_for(k, lease)
  return reply(1, k)
end
return {3}
`
