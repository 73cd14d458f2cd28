-- reclaim: takes over leases that expired (their worker died or stalled), so the caller can
-- record the lost attempt through `fail`. The old lease stops working at once.
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  meta hash
-- ARGV[1]  the most leases to take (1..1000)
-- ARGV[2]  lease duration in ms for the caller's new leases
--
-- Returns {token, member...}: the caller's new token (its leases are `<id>:<token>`) and the
-- reclaimed jobs; {0} when nothing expired.

local limit, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
if not limit or limit < 1 or limit > MAX_BATCH or not lease_ms or lease_ms <= 0 then
  return fail('reclaim takes a limit in 1..' .. MAX_BATCH .. ' and a positive lease')
end
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #expired == 0 then
  return {0}
end
local token = redis.call('HINCRBY', KEYS[3], 'fence', 1)
local out = {token}
redis.call('ZREM', KEYS[1], unpack(expired))
for i = 1, #expired do
  local id = lease_id(expired[i])
  local member = id and redis.call('HGET', KEYS[2], id)
  if member then
    redis.call('ZADD', KEYS[1], now + lease_ms, id .. ':' .. token)
    out[#out + 1] = member
  end
end
return out
