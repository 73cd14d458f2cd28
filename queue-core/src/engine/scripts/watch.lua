-- watch: registers interest in a job's outcome and returns it if the job already finished.
-- Registering and checking in one script closes the race with a job finishing in between.
--
-- KEYS[1]  waiters sorted set
-- KEYS[2]  results hash
-- KEYS[3]  dead jobs hash
-- ARGV[1]  job id
-- ARGV[2]  how long the caller will wait, in ms
--
-- Returns {'completed', outcome} | {'dead', member} | {'waiting'}.

local id, wait_ms = ARGV[1], tonumber(ARGV[2])
if not wait_ms or wait_ms < 0 then
  return fail('watch takes a job id and a wait in ms')
end
local now = now_ms()
-- Registrations of callers that gave up are dropped here, so the set stays small.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local outcome = redis.call('HGET', KEYS[2], id)
if outcome then
  return {'completed', outcome}
end
local dead = redis.call('HGET', KEYS[3], id)
if dead then
  return {'dead', dead}
end
redis.call('ZADD', KEYS[1], 'GT', now + wait_ms + 1000, id)
return {'waiting'}
