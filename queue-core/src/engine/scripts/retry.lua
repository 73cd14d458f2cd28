-- retry: a failed attempt runs again, now (pending) or after its backoff (the retry set). An
-- attempt lost with its worker (counter `recovered`) goes to the recovered set instead, which
-- fetch hands out at most one per worker process: if this job is what killed the worker, it
-- kills its next one alone, and the jobs that merely shared its process are not charged again.
-- Applied only if the caller still holds the lease (fencing).
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  pending sorted set
-- KEYS[4]  retry sorted set
-- KEYS[5]  stats hash
-- KEYS[6]  wake list
-- KEYS[7]  throughput hash
-- KEYS[8]  meta hash
-- KEYS[9]  events stream
-- KEYS[10] recovered sorted set
-- ARGV[1]  lease `<id>:<token>`
-- ARGV[2]  the job's member, re-encoded with the failure recorded
-- ARGV[3]  run-at in ms (now or earlier: at once, into pending; later: into the retry set)
-- ARGV[4]  counter: failed | recovered
-- ARGV[5]  the attempt's error, for lifecycle events
--
-- Returns 1 when applied, 0 when the lease was lost (nothing changed).

local lease, member, at, counter = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local invalid = check_lease(lease, member) or check_counter(counter)
if invalid then
  return invalid
end
if not at then
  return fail('retry takes a run-at')
end
local F = { active = KEYS[1], inflight = KEYS[2], stats = KEYS[5], throughput = KEYS[7], meta = KEYS[8], events = KEYS[9] }
local id, now = record_failure(F, lease, counter, ARGV[5])
if not id then
  return 0
end
-- A recovered job goes to the recovered set whatever its run-at says: the caller's clock may
-- run ahead of Redis's, and a job taken back from a lost worker must not slip into pending.
if counter == 'recovered' then
  redis.call('ZADD', KEYS[10], 0, member)
elseif at <= now then
  redis.call('ZADD', KEYS[3], 0, member)
else
  redis.call('ZADD', KEYS[4], at, member)
end
redis.call('HINCRBY', KEYS[5], 'retried', 1)
wake(KEYS[6])
emit(KEYS[8], KEYS[9], 'retrying', {id}, now)
return 1
