-- cache_unlock: releases a cache fill lock if the caller still holds it (its token), so a
-- loader that outlived its lock never releases someone else's.
--
-- KEYS[1]  the lock
-- ARGV[1]  the caller's token
--
-- Returns 1 released, 0 not held by the caller.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
