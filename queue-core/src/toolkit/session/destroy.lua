-- session_destroy: deletes sessions and drops them from their user's index.
--
-- KEYS[1]    the user's index (or a session hash when there is none)
-- KEYS[1+i]  the i-th session hash
-- ARGV[i]    the i-th session's id hash (index member)
--
-- Returns how many sessions existed.

local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
  if KEYS[1] ~= KEYS[i] then
    redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return n
