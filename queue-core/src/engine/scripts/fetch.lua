-- fetch: promotes due scheduled jobs, then leases up to n pending jobs to the caller.
--
-- KEYS[1]  pending sorted set
-- KEYS[2]  scheduled sorted set
-- KEYS[3]  active sorted set (leases)
-- KEYS[4]  inflight hash
-- KEYS[5]  meta hash
-- KEYS[6]  wake list
-- KEYS[7]  retry sorted set
-- KEYS[8]  events stream
-- KEYS[9]  dead sorted set
-- KEYS[10] dead jobs hash
-- KEYS[11] stats hash
-- KEYS[12] recovered sorted set
-- KEYS[13] owners sorted set (lease tokens per worker)
-- KEYS[14] the metrics hash of the current minute (optional)
-- KEYS[15] the metrics hash of the current hour (with KEYS[14])
-- ARGV[1]  n, the most jobs to lease (0..1000; 0 only promotes)
-- ARGV[2]  lease duration in ms
-- ARGV[3]  the caller's receipt field in the meta hash ('' for none): set to this batch's
--          token, so a caller whose reply was lost can still claim its leases (`redeem`)
-- ARGV[4]  the most jobs to lease from the recovered set (0..n; absent: 1)
-- ARGV[5]  '1' to look for expired leases (absent: '1'); each of these two costs a command per
--          fetch, so the worker asks only when it has a reason to (see queue-worker)
-- ARGV[6]  the caller's owner prefix `<len>:<worker>:` ('' or absent for none): this batch's
--          token is recorded under it in the owners set, so that if the caller's liveness
--          channel empties (its process died), other workers find these leases at once
--          (`beat`) instead of waiting for them to expire
-- ARGV[7]  the metrics hash's lifetime in ms (with KEYS[14]): members dead-lettered here are
--          counted as `d|` (the empty job name, which no enqueue accepts: their name is unknown)
--
-- Recovered jobs (taken back from a lost worker) are leased first, but at most ARGV[4] of them:
-- a worker process asks for one only while it holds none, so a job that kills its worker
-- process shares that process with no other recovered job.
--
-- A member larger than the queue's payload cap (`max_payload` in meta, default 512 KiB) is not
-- leased either: it goes to the dead set under its own id (a fresh one if that id is already
-- dead), counted as `too_large`, so no worker ever holds it in memory.
--
-- A member whose header is not a job id (garbage written by a foreign producer, a truncated
-- write) cannot be leased: no lease could name it. Nor can a second member with the same id
-- in one batch: its lease and inflight entry would be the first's. Either goes straight to the
-- dead set under a fresh id (`garbage_id`), its bytes kept exactly as they were. (A member
-- whose id is already dead is caught by `dead`, on the rare path, not here on every fetch.)
--
-- Returns {token, next_due_ms, expired, k, dead id x k, r, member...}: the fencing token shared
-- by this batch's leases (a lease is `<id>:<token>`), the run-at of the earliest scheduled or
-- retrying job (-1 if none), 1 when some worker's lease has expired (0 otherwise, or when not
-- asked; a busy worker learns of a dead one at a fetch, and its heartbeat takes the jobs over
-- at once), the ids given to k members dead-lettered unleased (garbage, too large), how many of the leased jobs (the
-- first r) came from the recovered set, and the leased jobs. A paused queue leases nothing
-- (token 0).

local n, lease_ms, receipt = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] or ''
local owner = ARGV[6] or ''
local rmax = tonumber(ARGV[4] or '1')
if not n or n < 0 or n > MAX_BATCH or not lease_ms or lease_ms <= 0 or not rmax or rmax < 0 then
  return fail('fetch takes n in 0..' .. MAX_BATCH .. ', a positive lease and a recovered limit >= 0')
end
if receipt ~= '' and string.sub(receipt, 1, 8) ~= 'receipt:' then
  return fail('fetch: a receipt field starts with receipt:')
end
if owner ~= '' and (not KEYS[13] or not owner_prefix_ok(owner)) then
  return fail('fetch: an owner prefix is <len>:<worker>: and needs the owners key')
end
local now = now_ms()

-- Promotion is bounded: a backlog of due jobs moves over several fetches, never all at once.
local function promote(from)
  local due = redis.call('ZRANGEBYSCORE', from, '-inf', now, 'LIMIT', 0, MAX_BATCH)
  if #due > 0 then
    local adds = {}
    for i = 1, #due do
      adds[#adds + 1] = 0
      adds[#adds + 1] = due[i]
    end
    redis.call('ZADD', KEYS[1], unpack(adds))
    redis.call('ZREM', from, unpack(due))
  end
  local first = redis.call('ZRANGE', from, 0, 0, 'WITHSCORES')
  if #first > 0 then
    return tonumber(first[2])
  end
  return -1
end

local next_due = promote(KEYS[2])
local next_retry = promote(KEYS[7])
if next_due < 0 or (next_retry >= 0 and next_retry < next_due) then
  next_due = next_retry
end

local expired = 0
if (ARGV[5] or '1') == '1' then
  local earliest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #earliest > 0 and tonumber(earliest[2]) < now then
    expired = 1
  end
end

local flags = redis.call('HMGET', KEYS[5], 'paused', 'max_payload')
if n == 0 or flags[1] then
  return {0, next_due, expired, 0, 0}
end
local cap = payload_cap(flags[2])

local popped = {}
if rmax > 0 then
  popped = redis.call('ZPOPMIN', KEYS[12], math.min(rmax, n))
end
local recovered = #popped / 2
if recovered < n then
  local rest = redis.call('ZPOPMIN', KEYS[1], n - recovered)
  for i = 1, #rest do
    popped[#popped + 1] = rest[i]
  end
end
if #popped == 0 then
  return {0, next_due, expired, 0, 0}
end

-- Garbage out first, so that what is leased below is only what a lease can name.
local good, bad, good_recovered = {}, {}, 0
local no_header, shared, too_large, taken = {}, {}, {}, {}
local function dead_letter(member, why)
  local id = garbage_id(KEYS[5], now)
  redis.call('ZADD', KEYS[9], now, id)
  redis.call('HSET', KEYS[10], id, member)
  bad[#bad + 1] = id
  why[#why + 1] = id
end
for i = 1, #popped, 2 do
  local member = popped[i]
  local id = #member >= 29 and member_id(member)
  id = id and string.match(id, '^[0-9A-Z]+$') and id
  if id and #member > cap then
    local own = keep_dead(KEYS[9], KEYS[10], KEYS[5], id, member, now)
    bad[#bad + 1] = own
    too_large[#too_large + 1] = own
  elseif id then
    if taken[id] then
      dead_letter(member, shared)
    else
      taken[id] = true
      good[#good + 1] = member
      if i <= 2 * recovered then
        good_recovered = good_recovered + 1
      end
    end
  else
    dead_letter(member, no_header)
  end
end
if #bad > 0 then
  redis.call('HINCRBY', KEYS[11], 'dead', #bad)
  local ttl = tonumber(ARGV[7])
  if KEYS[14] and ttl and ttl >= 1 then
    for k = 14, 15 do
      if KEYS[k] and redis.call('HINCRBY', KEYS[k], 'd|', #bad) == #bad then
        redis.call('PEXPIRE', KEYS[k], ttl)
      end
    end
  end
  if #bad > #too_large then
    redis.call('HINCRBY', KEYS[11], 'garbage', #bad - #too_large)
  end
  if #too_large > 0 then
    redis.call('HINCRBY', KEYS[11], 'too_large', #too_large)
  end
  emit(KEYS[5], KEYS[8], 'dead', too_large, now, 'too_large: the member exceeds the queue\'s payload cap of ' .. cap .. ' bytes')
  emit(KEYS[5], KEYS[8], 'dead', no_header, now, 'undecodable: the member has no job id header')
  emit(KEYS[5], KEYS[8], 'dead', shared, now, 'undecodable: another member holds the same job id')
end
if #good == 0 then
  local out = {0, next_due, expired, #bad}
  for i = 1, #bad do
    out[#out + 1] = bad[i]
  end
  out[#out + 1] = 0
  return out
end

local token = redis.call('HINCRBY', KEYS[5], 'fence', 1)
if receipt ~= '' then
  redis.call('HSET', KEYS[5], receipt, token)
end
if owner ~= '' then
  redis.call('ZADD', KEYS[13], 0, owner_member(owner, token))
end
local deadline = now + lease_ms
local out, leases, inflight, ids = {token, next_due, expired, #bad}, {}, {}, {}
for i = 1, #bad do
  out[#out + 1] = bad[i]
end
out[#out + 1] = good_recovered
for i = 1, #good do
  local member = good[i]
  local id = member_id(member)
  out[#out + 1] = member
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id .. ':' .. token
  inflight[#inflight + 1] = id
  inflight[#inflight + 1] = member
  ids[#ids + 1] = id
end
emit(KEYS[5], KEYS[8], 'started', ids, now)
redis.call('ZADD', KEYS[3], unpack(leases))
redis.call('HSET', KEYS[4], unpack(inflight))

-- More work than this worker took: pass the signal on so another idle worker wakes up.
if #popped == 2 * n and (redis.call('ZCARD', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[12]) > 0) then
  wake(KEYS[6])
end
return out
