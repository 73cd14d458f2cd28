-- purge: removes up to `limit` jobs of one state, oldest first (operator action; called in
-- a loop for large sets, so no call blocks Redis for long). Idempotency keys of purged jobs
-- are not released: they expire at their TTL.
--
-- KEYS[1]  the state's sorted set: pending | scheduled | retry | dead | completed
-- KEYS[2]  the state's hash (dead jobs | results); for member states, KEYS[1] again
-- ARGV[1]  'member' or 'id' (see delete)
-- ARGV[2]  limit (1..1000)
--
-- Returns how many were removed.

local mode, limit = ARGV[1], tonumber(ARGV[2])
if (mode ~= 'member' and mode ~= 'id') or not limit or limit < 1 or limit > MAX_BATCH then
  return fail('purge takes a mode and a limit in 1..' .. MAX_BATCH)
end
local entries = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
if #entries == 0 then
  return 0
end
if mode == 'id' then
  redis.call('HDEL', KEYS[2], unpack(entries))
end
redis.call('ZREM', KEYS[1], unpack(entries))
return #entries
