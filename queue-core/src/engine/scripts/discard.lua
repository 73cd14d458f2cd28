-- discard: the handler asked to drop the job. It is counted, kept with the completed jobs
-- (retention) so an operator can still see it, its idempotency key is released and whoever
-- waits on it is told. Applied only if the caller still holds the lease (fencing).
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  completed sorted set
-- KEYS[4]  results hash
-- KEYS[5]  stats hash
-- KEYS[6]  waiters sorted set
-- KEYS[7]  throughput hash
-- KEYS[8]  meta hash
-- KEYS[9]  events stream
-- KEYS[10] the job's idempotency key (optional)
-- ARGV[1]  lease `<id>:<token>`
-- ARGV[2]  the job's member, re-encoded with the failure recorded
-- ARGV[3]  how many completed jobs to keep (0 = keep none)
-- ARGV[4]  how long to keep them, in ms (0 = no age limit)
-- ARGV[5]  counter: failed | recovered
-- ARGV[6]  the pub/sub channel for awaited outcomes
-- ARGV[7]  the encoded outcome, kept and sent to waiters
-- ARGV[8]  the attempt's error, for lifecycle events
--
-- Returns 1 when applied, 0 when the lease was lost (nothing changed).

local lease, member, keep, age, counter = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local invalid = check_lease(lease, member) or check_counter(counter)
if invalid then
  return invalid
end
if not keep or not age then
  return fail('discard takes a retention count and age')
end
local F = { active = KEYS[1], inflight = KEYS[2], stats = KEYS[5], throughput = KEYS[7], meta = KEYS[8], events = KEYS[9] }
local id, now = record_failure(F, lease, counter, ARGV[8])
if not id then
  return 0
end
redis.call('HINCRBY', KEYS[5], 'discarded', 1)
if keep > 0 then
  redis.call('ZADD', KEYS[3], now, id)
  redis.call('HSET', KEYS[4], id, ARGV[7])
end
trim(KEYS[3], KEYS[4], keep, age, now)
release_unique(KEYS[10], id)
emit(KEYS[8], KEYS[9], 'discarded', {id}, now, ARGV[8])
notify(KEYS[6], ARGV[6], id, ARGV[7])
return 1
