-- Prelude shared by every script (concatenated in front of each at compile time).
--
-- Member layout (see codec.rs and docs/PROTOCOL.md): 2 hex digits of (255 - priority), the
-- 26-character job id, then the MessagePack envelope. A lease member is `<id>:<token>`.
-- Scripts read the server's clock, so every worker compares leases against one clock.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function member_id(member)
  return string.sub(member, 3, 28)
end

local function lease_id(lease)
  return string.match(lease, '^(.*):%d+$')
end

local function lease_token(lease)
  return string.match(lease, ':(%d+)$')
end

-- A worker's owner prefix is `<len>:<worker>:`, the length making it injective: no worker's
-- prefix is the start of another's, so a lexicographic range of the owners set holds exactly
-- one worker's tokens.
local function owner_prefix_ok(p)
  local len, rest = string.match(p, '^(%d+):(.*)$')
  return len ~= nil and #rest == tonumber(len) + 1 and string.sub(rest, -1) == ':'
end

-- A worker's token in the owners set: its prefix, then the token in 16 digits, so that the
-- lexicographic order of one worker's members is the numeric order of its tokens (a range
-- removes every token up to a horizon natively).
local function owner_member(prefix, token)
  return prefix .. string.format('%016d', tonumber(token))
end

-- Batches are capped by the client so that `unpack` stays far below Lua's stack limit.
local MAX_BATCH = 1000

-- The largest member a queue takes, unless its meta hash says otherwise (`max_payload`, which
-- a client configured with another cap writes): the client's DEFAULT_MAX_PAYLOAD.
local DEFAULT_MAX_PAYLOAD = 524288

-- A queue's cap from its meta field: a whole number of bytes from a header's 29 to Redis's
-- largest string; anything else (absent, `nan`, `inf`, `0`, `-1`, `1.5`) is the default.
local function payload_cap(raw)
  local cap = tonumber(raw)
  if cap and cap == math.floor(cap) and cap >= 29 and cap <= 536870912 then
    return cap
  end
  return DEFAULT_MAX_PAYLOAD
end

-- A script's own refusal carries the reply code QUEUE, so clients classify it by code.
local function fail(msg)
  return redis.error_reply('QUEUE ' .. msg)
end

local function wake(key)
  -- At most one marker: it only has to tell an idle worker that there may be work.
  if redis.call('LLEN', key) == 0 then
    redis.call('RPUSH', key, '1')
  end
end

-- Removes the idempotency key if it still belongs to this job.
local function release_unique(key, id)
  if key and redis.call('GET', key) == id then
    redis.call('DEL', key)
  end
end

-- Keeps at most `count` entries younger than `age_ms` in the sorted set `zkey` (score = time)
-- and the matching fields of the hash `hkey`; at most MAX_BATCH removed per call.
local function trim(zkey, hkey, count, age_ms, now)
  local n = redis.call('ZCARD', zkey)
  if n > count then
    local drop = math.min(n - count, MAX_BATCH)
    local old = redis.call('ZRANGE', zkey, 0, drop - 1)
    redis.call('HDEL', hkey, unpack(old))
    redis.call('ZREMRANGEBYRANK', zkey, 0, drop - 1)
  end
  if age_ms > 0 then
    local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', now - age_ms, 'LIMIT', 0, MAX_BATCH)
    if #old > 0 then
      redis.call('HDEL', hkey, unpack(old))
      redis.call('ZREM', zkey, unpack(old))
    end
  end
end

-- Publishes an outcome if someone waits on this job.
local function notify(waiters, channel, id, outcome)
  if redis.call('ZSCORE', waiters, id) then
    redis.call('PUBLISH', channel, outcome)
  end
end

-- Lifecycle events, when the queue has them on (`events` in its meta hash): one capped stream
-- entry and one pub/sub message (on a channel named like the stream) per call and type, listing
-- every job the call concerns, so their cost is per batch, not per job.
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function base32(n, width)
  local out = {}
  for i = width, 1, -1 do
    local d = n % 32
    out[i] = string.sub(CROCKFORD, d + 1, d + 1)
    n = math.floor(n / 32)
  end
  return table.concat(out)
end

-- A fresh dead-set id for a member that cannot keep its own (no id header, or its id is taken):
-- a ULID of this millisecond whose random part is `ZZZZZZ` and a per-queue counter
-- (`garbage_seq` in the meta hash), which no generator draws in practice.
local function garbage_id(meta, now)
  local seq = redis.call('HINCRBY', meta, 'garbage_seq', 1)
  return base32(now, 10) .. 'ZZZZZZ' .. base32(seq, 10)
end

-- Keeps `member` in the dead set under `id`, or under a fresh id when another member already
-- holds that one there (both are kept, byte for byte). Returns the id used.
local function keep_dead(dead, dead_jobs, meta, id, member, now)
  if redis.call('HEXISTS', dead_jobs, id) == 1 then
    id = garbage_id(meta, now)
  end
  redis.call('ZADD', dead, now, id)
  redis.call('HSET', dead_jobs, id, member)
  return id
end

local EVENTS_MAXLEN = 10000

local function emit(meta, stream, kind, ids, now, err)
  if #ids == 0 or redis.call('HGET', meta, 'events') ~= '1' then
    return
  end
  -- A sequence number per queue lets any consumer see exactly how many events it missed.
  local seq = redis.call('HINCRBY', meta, 'event_seq', 1)
  local fields = {'type', kind, 'at', now, 'seq', seq, 'ids', table.concat(ids, ',')}
  local event = {type = kind, at = now, seq = seq, ids = ids}
  if err then
    fields[#fields + 1] = 'error'
    fields[#fields + 1] = err
    event.error = err
  end
  redis.call('XADD', stream, 'MAXLEN', '~', EVENTS_MAXLEN, '*', unpack(fields))
  redis.call('PUBLISH', stream, cmsgpack.pack(event))
end

-- Counts `n` events of `kind` ('c' completed, 'f' failed attempt) in the throughput ring: 360
-- ten-second slots, each tagged with its bucket number and reset when the ring comes round.
local function count(key, kind, n, now)
  local bucket = math.floor(now / 10000)
  local slot = bucket % 360
  if redis.call('HGET', key, 't:' .. slot) ~= tostring(bucket) then
    redis.call('HSET', key, 't:' .. slot, bucket, 'c:' .. slot, 0, 'f:' .. slot, 0)
  end
  redis.call('HINCRBY', key, kind .. ':' .. slot, n)
end
