-- complete: records successful jobs, each checked against its lease (fencing).
--
-- KEYS[1]    active sorted set
-- KEYS[2]    inflight hash
-- KEYS[3]    completed sorted set
-- KEYS[4]    results hash
-- KEYS[5]    stats hash
-- KEYS[6]    waiters sorted set
-- KEYS[7]    throughput hash
-- KEYS[8]    meta hash
-- KEYS[9]    events stream
-- KEYS[9+k]  the k-th distinct idempotency key to release
-- ARGV[1]    number of jobs n (1..1000)
-- ARGV[2]    retention: how many completed jobs to keep (0 = none)
-- ARGV[3]    retention: how long to keep them, in ms (0 = no age limit)
-- ARGV[4]    the pub/sub channel for awaited outcomes
-- ARGV[...]  three values per job: lease `<id>:<token>`, encoded outcome, k (0 = no unique key)
--
-- Returns one integer per job: 1 recorded, 0 lease lost (another worker owns the job now, it
-- was already completed, or the same lease came earlier in this call), in which case nothing
-- about that job changed.

local n, keep, age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not n or n < 1 or n > MAX_BATCH or #ARGV ~= 4 + 3 * n or not keep or not age then
  return fail('complete expects n in 1..' .. MAX_BATCH .. ', retention, channel and 3 arguments per job')
end
for i = 0, n - 1 do
  local k = tonumber(ARGV[7 + i * 3])
  if not k or (k > 0 and KEYS[9 + k] == nil) then
    return fail('job ' .. (i + 1) .. ': unique key index is not in KEYS')
  end
end

local leases = {}
for i = 0, n - 1 do
  leases[i + 1] = ARGV[5 + i * 3]
end
local held = redis.call('ZMSCORE', KEYS[1], unpack(leases))

local now = now_ms()
local out, valid, ids, done, results = {}, {}, {}, {}, {}
local any_waiters = redis.call('ZCARD', KEYS[6]) > 0
local seen = {}
for i = 1, n do
  if held[i] and not seen[leases[i]] then
    seen[leases[i]] = true
    out[i] = 1
    local lease, outcome, k = leases[i], ARGV[3 + i * 3], tonumber(ARGV[4 + i * 3])
    local id = lease_id(lease)
    valid[#valid + 1] = lease
    ids[#ids + 1] = id
    done[#done + 1] = now
    done[#done + 1] = id
    results[#results + 1] = id
    results[#results + 1] = outcome
    if k > 0 then
      release_unique(KEYS[9 + k], id)
    end
    if any_waiters then
      notify(KEYS[6], ARGV[4], id, outcome)
    end
  else
    out[i] = 0
  end
end

if #valid > 0 then
  redis.call('ZREM', KEYS[1], unpack(valid))
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('HINCRBY', KEYS[5], 'completed', #valid)
  count(KEYS[7], 'c', #valid, now)
  if keep > 0 then
    redis.call('ZADD', KEYS[3], unpack(done))
    redis.call('HSET', KEYS[4], unpack(results))
  end
  trim(KEYS[3], KEYS[4], keep, age, now)
  emit(KEYS[8], KEYS[9], 'completed', ids, now)
end
return out
