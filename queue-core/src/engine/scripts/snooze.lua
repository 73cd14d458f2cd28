-- snooze: the job could not run yet (rate limited); it waits in the scheduled set and no
-- attempt is counted. Applied only if the caller still holds the lease (fencing).
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  scheduled sorted set
-- KEYS[4]  stats hash
-- KEYS[5]  wake list
-- KEYS[6]  meta hash
-- KEYS[7]  events stream
-- ARGV[1]  lease `<id>:<token>`
-- ARGV[2]  the job's member (unchanged: a snooze records no failure)
-- ARGV[3]  run-at in ms
--
-- Returns 1 when applied, 0 when the lease was lost (nothing changed).

local lease, member, at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local invalid = check_lease(lease, member)
if invalid then
  return invalid
end
if not at then
  return fail('snooze takes a run-at')
end
local id = take_lease(KEYS[1], KEYS[2], lease)
if not id then
  return 0
end
local now = now_ms()
redis.call('ZADD', KEYS[3], at, member)
redis.call('HINCRBY', KEYS[4], 'snoozed', 1)
wake(KEYS[5])
emit(KEYS[6], KEYS[7], 'snoozed', {id}, now)
return 1
