-- session_create: stores a new session, refusing to overwrite one (an id collision: the caller
-- draws a new id).
--
-- KEYS[1]  the session hash (named by the hash of the id)
-- KEYS[2]  the user's session index, or the session hash again when there is no user
-- ARGV[1]  the id's hash (member of the user index)
-- ARGV[2]  idle timeout ms    ARGV[3]  absolute timeout ms    ARGV[4]  user ('' = none)
-- ARGV[5..] data: field, JSON value pairs
--
-- Returns 1 created, 0 an id collision.

local idle, absolute = tonumber(ARGV[2]), tonumber(ARGV[3])
if not idle or idle <= 0 or not absolute or absolute <= 0 or (#ARGV - 4) % 2 ~= 0 then
  return fail('session_create takes idle and absolute timeouts and field/value pairs')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = now_ms()
local fields = {'c', now, 'a', now + absolute, 'i', idle, 'v', 1, 'u', ARGV[4]}
for i = 5, #ARGV, 2 do
  fields[#fields + 1] = 'd:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], math.min(idle, absolute))
if ARGV[4] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[1])
  -- The index lives as long as the longest session it can hold.
  if redis.call('PTTL', KEYS[2]) < absolute then
    redis.call('PEXPIRE', KEYS[2], absolute)
  end
end
return 1
