-- complete: records successful jobs, each checked against its lease (fencing), and counts
-- them in the queue's metrics history.
--
-- KEYS[1]     active sorted set
-- KEYS[2]     inflight hash
-- KEYS[3]     completed sorted set
-- KEYS[4]     results hash
-- KEYS[5]     stats hash
-- KEYS[6]     waiters sorted set
-- KEYS[7]     throughput hash
-- KEYS[8]     meta hash
-- KEYS[9]     events stream
-- KEYS[10]    the metrics hash of the current minute
-- KEYS[10+k]  the k-th distinct idempotency key to release
-- ARGV[1]     number of jobs n (1..1000)
-- ARGV[2]     retention: how many completed jobs to keep (0 = none)
-- ARGV[3]     retention: how long to keep them, in ms (0 = no age limit)
-- ARGV[4]     the pub/sub channel for awaited outcomes
-- ARGV[...]   four values per job: lease `<id>:<token>`, encoded outcome, k (0 = no unique
--             key), g (its job name's index in the names below, 0 = not counted)
-- ARGV[...]   the number of job names G, then G names
-- ARGV[...]   the metrics block (see check_metrics): the wait and run-time histograms
--
-- Returns one integer per job: 1 recorded, 0 lease lost (another worker owns the job now, it
-- was already completed, or the same lease came earlier in this call), in which case nothing
-- about that job changed. The `c|<name>` counters count recorded jobs only; the histograms
-- count every attempt that ran.

local n, keep, age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not n or n < 1 or n > MAX_BATCH or not keep or not age then
  return fail('complete expects n in 1..' .. MAX_BATCH .. ', retention, channel, 4 arguments per job, names and metrics')
end
local names_at = 5 + 4 * n
local names = tonumber(ARGV[names_at])
if not names or names < 0 or names > n then
  return fail('complete expects the number of job names after the jobs')
end
local invalid = check_metrics(names_at + names + 1)
if invalid then
  return invalid
end
for i = 0, n - 1 do
  local k, g = tonumber(ARGV[7 + i * 4]), tonumber(ARGV[8 + i * 4])
  if not k or (k > 0 and KEYS[10 + k] == nil) then
    return fail('job ' .. (i + 1) .. ': unique key index is not in KEYS')
  end
  if not g or g < 0 or g > names then
    return fail('job ' .. (i + 1) .. ': job name index is not among the names')
  end
end

local leases = {}
for i = 0, n - 1 do
  leases[i + 1] = ARGV[5 + i * 4]
end
local held = redis.call('ZMSCORE', KEYS[1], unpack(leases))

local now = now_ms()
local out, valid, ids, done, results, per_name = {}, {}, {}, {}, {}, {}
local any_waiters = redis.call('ZCARD', KEYS[6]) > 0
local seen = {}
for i = 1, n do
  if held[i] and not seen[leases[i]] then
    seen[leases[i]] = true
    out[i] = 1
    local lease, outcome, k = leases[i], ARGV[2 + i * 4], tonumber(ARGV[3 + i * 4])
    local g = tonumber(ARGV[4 + i * 4])
    if g > 0 then
      per_name[g] = (per_name[g] or 0) + 1
    end
    local id = lease_id(lease)
    valid[#valid + 1] = lease
    ids[#ids + 1] = id
    done[#done + 1] = now
    done[#done + 1] = id
    results[#results + 1] = id
    results[#results + 1] = outcome
    if k > 0 then
      release_unique(KEYS[10 + k], id)
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
local counted = {}
for g, c in pairs(per_name) do
  counted[#counted + 1] = 'c|' .. ARGV[names_at + g]
  counted[#counted + 1] = c
end
add_metrics(KEYS[10], names_at + names + 1, counted)
return out
