-- cron_fire: fires one tick of a schedule exactly once, whatever the number of schedulers:
-- the tick fires only if it is newer than the schedule's last fired tick.
--
-- KEYS[1]  cron state hash of the target queue: `last:<name>` (ms), `paused:<name>`
-- KEYS[2]  pending sorted set
-- KEYS[3]  wake list
-- ARGV[1]  schedule name
-- ARGV[2]  the tick's instant, ms since the Unix epoch
-- ARGV[3]  the job's member ('' to only claim the tick, for in-process tasks)
--
-- Returns 1 fired, 0 already fired (by this or another scheduler), -1 schedule paused.

local name, tick, member = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if not name or name == '' or not tick then
  return fail('cron_fire takes a schedule name and a tick')
end
if member ~= '' and #member < 29 then
  return fail('cron_fire: member shorter than its header')
end
if redis.call('HEXISTS', KEYS[1], 'paused:' .. name) == 1 then
  return -1
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last:' .. name))
if last and tick <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'last:' .. name, ARGV[2])
if member ~= '' then
  redis.call('ZADD', KEYS[2], 0, member)
  wake(KEYS[3])
end
return 1
