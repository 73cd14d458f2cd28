-- reclaim: takes over leases that expired (their worker died or stalled), so the caller can
-- record the lost attempt through `fail`. The old lease stops working at once.
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  meta hash: `watched_at`, when the last reclaim pass of any worker ran (ms)
-- ARGV[1]  the most leases to take (1..1000)
-- ARGV[2]  lease duration in ms for the caller's new leases
-- ARGV[3]  watch gap in ms: a pass this long after the previous one means nobody watched
--
-- Every worker passes here at least twice per lease. When the previous pass is older than the
-- gap, nobody was watching (Redis was frozen or restarting, or every worker was down), so an
-- expired lease says nothing about its worker: instead of reclaiming, every expired lease gets
-- one more lease from now (an amnesty). Live workers extend theirs by heartbeat meanwhile; the
-- leases of workers that really died expire again and are reclaimed one lease later.
--
-- Returns {token, member...}: the caller's new token (its leases are `<id>:<token>`) and the
-- reclaimed jobs; {0} when nothing expired; {0, n, gap_ms} after an amnesty of n leases.

local limit, lease_ms, gap_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not limit or limit < 1 or limit > MAX_BATCH or not lease_ms or lease_ms <= 0 or not gap_ms or gap_ms <= 0 then
  return fail('reclaim takes a limit in 1..' .. MAX_BATCH .. ', a positive lease and a positive gap')
end
local now = now_ms()
local watched = tonumber(redis.call('HGET', KEYS[3], 'watched_at'))
redis.call('HSET', KEYS[3], 'watched_at', now)
if watched and now - watched > gap_ms then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  if #stale > 0 then
    local adds = {}
    for i = 1, #stale do
      adds[#adds + 1] = now + lease_ms
      adds[#adds + 1] = stale[i]
      -- ZADD takes at most MAX_BATCH pairs per call (Lua's unpack limit).
      if #adds >= 2 * MAX_BATCH then
        redis.call('ZADD', KEYS[1], 'XX', unpack(adds))
        adds = {}
      end
    end
    if #adds > 0 then
      redis.call('ZADD', KEYS[1], 'XX', unpack(adds))
    end
  end
  return {0, #stale, now - watched}
end
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
