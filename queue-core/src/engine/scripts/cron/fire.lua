-- cron_fire: fires one tick of a schedule exactly once, whatever the number of schedulers:
-- the tick fires only if it is newer than the schedule's last fired tick. The job goes through
-- the enqueue logic (lib/enqueue_jobs.lua), so a tick honours idempotency keys and emits the
-- same events as any enqueue.
--
-- KEYS[1]  cron state hash of the target queue: `last:<name>` (ms), `paused:<name>`
-- KEYS[2]  pending sorted set
-- KEYS[3]  scheduled sorted set
-- KEYS[4]  wake list
-- KEYS[5]  meta hash (is the `events` flag on?)
-- KEYS[6]  events stream
-- KEYS[7]  the job's idempotency key (optional)
-- ARGV[1]  schedule name
-- ARGV[2]  the tick's instant, ms since the Unix epoch
-- ARGV[3]  number of jobs: 1, or 0 to only claim the tick (in-process tasks)
-- ARGV[4..7] the job as `enqueue` takes it: member, run_at_ms, k (0 or 1), unique ttl in ms
--
-- Returns 1 fired, 0 already fired (by this or another scheduler), -1 schedule paused, or,
-- when the tick fired but its job was a duplicate (its unique key is held), the id of the job
-- that holds the key (a string; nothing was created).

local name, tick, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if not name or name == '' or not tick then
  return fail('cron_fire takes a schedule name and a tick')
end
if n ~= 0 and n ~= 1 then
  return fail('cron_fire fires 0 or 1 job, got ' .. tostring(ARGV[3]))
end
local K = { pending = KEYS[2], scheduled = KEYS[3], wake = KEYS[4], meta = KEYS[5], events = KEYS[6], unique = 6 }
local invalid = check_jobs(K, 4, n)
if invalid then
  return invalid
end
if redis.call('HEXISTS', KEYS[1], 'paused:' .. name) == 1 then
  return -1
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last:' .. name))
if last and tick <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'last:' .. name, ARGV[2])
local out = enqueue_jobs(K, 4, n)
if out[1] then
  return out[1]
end
return 1
