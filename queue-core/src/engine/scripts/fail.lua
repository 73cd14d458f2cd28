-- fail: settles one failed attempt: retry (now or later), dead-letter, or discard.
-- The caller decided which from the job's attempts and backoff; this script applies it
-- atomically and only if the caller still holds the lease (fencing).
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  pending sorted set
-- KEYS[4]  scheduled sorted set
-- KEYS[5]  dead sorted set
-- KEYS[6]  dead jobs hash
-- KEYS[7]  stats hash
-- KEYS[8]  wake list
-- KEYS[9]  waiters sorted set
-- KEYS[10] completed sorted set (discarded jobs are retained with the completed ones)
-- KEYS[11] results hash
-- KEYS[12] retry sorted set
-- KEYS[13] throughput hash
-- KEYS[14] meta hash
-- KEYS[15] events stream
-- KEYS[16] the job's idempotency key (optional)
-- ARGV[1]  lease `<id>:<token>`
-- ARGV[2]  the job's member, re-encoded with the failure recorded
-- ARGV[3]  action: retry | dead | discard | snooze (not an attempt: back to scheduled)
-- ARGV[4]  retry: run-at in ms (0 = at once; later goes to the retry set)
-- ARGV[5]  dead: how many dead jobs to keep
-- ARGV[6]  dead: how long to keep them, in ms (0 = no age limit)
-- ARGV[7]  the pub/sub channel for awaited outcomes
-- ARGV[8]  dead/discard: the encoded outcome for waiters
-- ARGV[9]  the counter to bump besides the action's own: failed | recovered
-- ARGV[10] discard: how many completed jobs to keep
-- ARGV[11] discard: how long to keep them, in ms (0 = no age limit)
-- ARGV[12] the attempt's error, for lifecycle events
--
-- Returns 1 when applied, 0 when the lease was lost (nothing changed).

local lease, member, action = ARGV[1], ARGV[2], ARGV[3]
local at, keep, age = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keep_done, age_done = tonumber(ARGV[10]), tonumber(ARGV[11])
if action ~= 'retry' and action ~= 'dead' and action ~= 'discard' and action ~= 'snooze' then
  return fail('unknown action ' .. tostring(action))
end
-- The counter names a field of the stats hash: only the two the protocol defines.
local counter = ARGV[9]
if counter ~= 'failed' and counter ~= 'recovered' then
  return fail('unknown counter ' .. tostring(counter))
end
if not at or not keep or not age or not keep_done or not age_done or #member < 29 then
  return fail('fail expects a member, a run-at and a retention')
end
local id = lease_id(lease)
if not id or id ~= member_id(member) then
  return fail('lease ' .. tostring(lease) .. ' does not match the member')
end
if not redis.call('ZSCORE', KEYS[1], lease) then
  return 0
end

local now = now_ms()
redis.call('ZREM', KEYS[1], lease)
redis.call('HDEL', KEYS[2], id)
if action == 'snooze' then
  -- The job could not run yet (rate limited): it waits, and no attempt is counted.
  redis.call('ZADD', KEYS[4], at, member)
  redis.call('HINCRBY', KEYS[7], 'snoozed', 1)
  wake(KEYS[8])
  emit(KEYS[14], KEYS[15], 'snoozed', {id}, now, ARGV[12])
  return 1
end
redis.call('HINCRBY', KEYS[7], counter, 1)
count(KEYS[13], 'f', 1, now)
emit(KEYS[14], KEYS[15], 'failed', {id}, now, ARGV[12])
if action == 'retry' then
  if at <= now then
    redis.call('ZADD', KEYS[3], 0, member)
  else
    redis.call('ZADD', KEYS[12], at, member)
  end
  redis.call('HINCRBY', KEYS[7], 'retried', 1)
  wake(KEYS[8])
  emit(KEYS[14], KEYS[15], 'retrying', {id}, now)
  return 1
end

if action == 'dead' then
  redis.call('ZADD', KEYS[5], now, id)
  redis.call('HSET', KEYS[6], id, member)
  redis.call('HINCRBY', KEYS[7], 'dead', 1)
  trim(KEYS[5], KEYS[6], keep, age, now)
else
  redis.call('HINCRBY', KEYS[7], 'discarded', 1)
  if keep_done > 0 then
    redis.call('ZADD', KEYS[10], now, id)
    redis.call('HSET', KEYS[11], id, ARGV[8])
  end
  trim(KEYS[10], KEYS[11], keep_done, age_done, now)
end
release_unique(KEYS[16], id)
emit(KEYS[14], KEYS[15], action == 'dead' and 'dead' or 'discarded', {id}, now, ARGV[12])
notify(KEYS[9], ARGV[7], id, ARGV[8])
return 1
