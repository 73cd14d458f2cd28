-- session_rotate: moves a session to a new id; the old id stops working at once.
--
-- KEYS[1]  the old session hash    KEYS[2]  the new session hash
-- KEYS[3]  the user's index, or the old session hash again when there is no user
-- ARGV[1]  old id hash             ARGV[2]  new id hash
--
-- Returns 1 rotated, 0 no such session, -1 the new id is taken (draw another).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
-- RENAME keeps the TTL and the data, and removes the old key in the same step.
redis.call('RENAME', KEYS[1], KEYS[2])
if KEYS[3] ~= KEYS[1] and redis.call('SREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[2])
end
return 1
