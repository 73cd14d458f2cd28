-- session_get: reads a session and slides its idle timeout (never past the absolute one).
--
-- KEYS[1]  the session hash
--
-- Returns the hash's fields and values, or nil when there is no live session.

local s = redis.call('HGETALL', KEYS[1])
if #s == 0 then
  return false
end
local now = now_ms()
local abs, idle
for i = 1, #s, 2 do
  if s[i] == 'a' then abs = tonumber(s[i + 1]) elseif s[i] == 'i' then idle = tonumber(s[i + 1]) end
end
if not abs or not idle or now >= abs then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('PEXPIRE', KEYS[1], math.min(idle, abs - now))
return s
