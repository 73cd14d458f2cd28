-- beat: a worker's heartbeat, and its watch over every worker's leases. Extends the leases the
-- caller still holds, then (when asked) takes over leases that expired: their worker died or
-- stalled, and the caller records the lost attempt through `retry`/`dead` (counter
-- `recovered`). One call per queue per heartbeat does both, so watching costs nothing extra.
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  meta hash: `watched_at`, when the last pass of any worker ran (ms); `fence`
-- KEYS[4]  recovered sorted set
-- ARGV[1]  lease duration in ms (for the extended leases and the caller's new ones)
-- ARGV[2]  the most expired leases to take over (0..1000; 0: extend only, no pass)
-- ARGV[3]  watch gap in ms: a pass this long after the previous one means nobody watched
-- ARGV[4..] the caller's leases `<id>:<token>` to extend (0..1000)
--
-- Every worker passes once per heartbeat, and the gap is longer than a heartbeat. When the
-- previous pass is older than the gap, nobody was watching (Redis was frozen or restarting, or
-- every worker was down), so a lease's deadline says nothing about its worker: instead of being
-- taken over, every lease that expired or would expire within a lease gets a full lease from
-- now (an amnesty). Live workers need that long to reconnect and beat again (a lease that
-- expires a moment after Redis returns would otherwise be taken from a worker that is still
-- reconnecting); the leases of workers that really died expire again and are taken over one
-- lease later.
--
-- The caller's own leases are extended first, so a worker that was late never takes over its
-- own jobs.
--
-- Returns {held x n, next, waiting, pass...}: per lease of ARGV[4..], 1 extended or 0 lost
-- (another worker took the job over); how many ms from now the earliest lease of any worker
-- expires (-1 when none is held: the caller may schedule a pass for then); how many recovered
-- jobs wait (so workers know to ask fetch for one); then, when a pass ran,
-- {token, member...} (the caller's new token: its new leases are `<id>:<token>`, and the
-- members of the jobs taken over), {0} when nothing expired, or {0, n, gap_ms} after an
-- amnesty of n leases.

local lease_ms, limit, gap_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #ARGV - 3
if not lease_ms or lease_ms <= 0 or not limit or limit < 0 or limit > MAX_BATCH
    or not gap_ms or gap_ms <= 0 or n > MAX_BATCH then
  return fail('beat takes a positive lease, a limit in 0..' .. MAX_BATCH .. ', a positive gap and at most ' .. MAX_BATCH .. ' leases')
end
local now = now_ms()
local out = {}

-- Gives each of `leases` (all in the active set) a full lease from now, in chunks: ZADD takes
-- at most MAX_BATCH pairs per call (Lua's unpack limit).
local function renew(leases)
  for first = 1, #leases, MAX_BATCH do
    local adds = {}
    for i = first, math.min(#leases, first + MAX_BATCH - 1) do
      adds[#adds + 1] = now + lease_ms
      adds[#adds + 1] = leases[i]
    end
    redis.call('ZADD', KEYS[1], 'XX', unpack(adds))
  end
end

if n > 0 then
  local leases = {}
  for i = 1, n do
    leases[i] = ARGV[i + 3]
  end
  local held = redis.call('ZMSCORE', KEYS[1], unpack(leases))
  local mine = {}
  for i = 1, n do
    out[i] = held[i] and 1 or 0
    if held[i] then
      mine[#mine + 1] = leases[i]
    end
  end
  renew(mine)
end
-- The earliest deadline after this call's own changes: the caller's leases are extended, and
-- the leases a pass takes over or forgives get a full lease.
local function next_expiry()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  out[#out + 1] = #first == 0 and -1 or math.max(0, tonumber(first[2]) - now)
  out[#out + 1] = redis.call('ZCARD', KEYS[4])
end
if limit == 0 then
  next_expiry()
  return out
end

local watched = tonumber(redis.call('HGET', KEYS[3], 'watched_at'))
redis.call('HSET', KEYS[3], 'watched_at', now)
if watched and now - watched > gap_ms then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + lease_ms)
  renew(stale)
  next_expiry()
  out[#out + 1] = 0
  out[#out + 1] = #stale
  out[#out + 1] = now - watched
  return out
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #expired == 0 then
  next_expiry()
  out[#out + 1] = 0
  return out
end
local token = redis.call('HINCRBY', KEYS[3], 'fence', 1)
redis.call('ZREM', KEYS[1], unpack(expired))
local members = {}
for i = 1, #expired do
  local id = lease_id(expired[i])
  local member = id and redis.call('HGET', KEYS[2], id)
  if member then
    redis.call('ZADD', KEYS[1], now + lease_ms, id .. ':' .. token)
    members[#members + 1] = member
  end
end
next_expiry()
out[#out + 1] = token
for i = 1, #members do
  out[#out + 1] = members[i]
end
return out
