-- trim: applies the retention policy to a queue that may be idle (maintenance): completed and
-- dead jobs beyond their count or age, and expired waiter registrations.
--
-- KEYS[1]  completed sorted set
-- KEYS[2]  results hash
-- KEYS[3]  dead sorted set
-- KEYS[4]  dead jobs hash
-- KEYS[5]  waiters sorted set
-- ARGV[1]  completed: count to keep     ARGV[2]  completed: age in ms (0 = none)
-- ARGV[3]  dead: count to keep          ARGV[4]  dead: age in ms (0 = none)
--
-- Returns {completed removed, dead removed}; at most 1000 of each per call.

local kc, ac, kd, ad = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if not kc or not ac or not kd or not ad then
  return fail('trim takes two counts and two ages')
end
local now = now_ms()
local c0, d0 = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[3])
trim(KEYS[1], KEYS[2], kc, ac, now)
trim(KEYS[3], KEYS[4], kd, ad, now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
return {c0 - redis.call('ZCARD', KEYS[1]), d0 - redis.call('ZCARD', KEYS[3])}
