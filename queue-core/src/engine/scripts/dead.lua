-- dead: a failed attempt that has no attempt left (or that the handler gave up on) moves the
-- job to the dead-letter set with its error history, releases its idempotency key and tells
-- whoever waits on it. Applied only if the caller still holds the lease (fencing).
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  dead sorted set
-- KEYS[4]  dead jobs hash
-- KEYS[5]  stats hash
-- KEYS[6]  waiters sorted set
-- KEYS[7]  throughput hash
-- KEYS[8]  meta hash
-- KEYS[9]  events stream
-- KEYS[10] the job's idempotency key (optional)
-- ARGV[1]  lease `<id>:<token>`
-- ARGV[2]  the job's member, re-encoded with the failure recorded
-- ARGV[3]  how many dead jobs to keep
-- ARGV[4]  how long to keep them, in ms (0 = no age limit)
-- ARGV[5]  counter: failed | recovered
-- ARGV[6]  the pub/sub channel for awaited outcomes
-- ARGV[7]  the encoded outcome for waiters
-- ARGV[8]  the attempt's error, for lifecycle events
--
-- Returns 1 when applied, 0 when the lease was lost (nothing changed).

local lease, member, keep, age, counter = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local invalid = check_lease(lease, member) or check_counter(counter)
if invalid then
  return invalid
end
if not keep or not age then
  return fail('dead takes a retention count and age')
end
local F = { active = KEYS[1], inflight = KEYS[2], stats = KEYS[5], throughput = KEYS[7], meta = KEYS[8], events = KEYS[9] }
local id, now = record_failure(F, lease, counter, ARGV[8])
if not id then
  return 0
end
-- Another member with this id is dead already (garbage sharing an id, written by a foreign
-- producer): both are kept, this one under a fresh id.
local dead_id = keep_dead(KEYS[3], KEYS[4], KEYS[8], id, member, now)
redis.call('HINCRBY', KEYS[5], 'dead', 1)
trim(KEYS[3], KEYS[4], keep, age, now)
release_unique(KEYS[10], id)
emit(KEYS[8], KEYS[9], 'dead', {id}, now, ARGV[8])
notify(KEYS[6], ARGV[6], id, ARGV[7])
return 1
