-- beat: a worker's heartbeat, and its watch over every worker's leases. Extends the leases the
-- caller still holds, keeps the caller's liveness record, then (when asked) takes over the
-- leases of workers that are gone: those whose liveness channel emptied (their process died
-- and the kernel closed its socket), and any lease that expired (its worker stalled, or lost
-- its network). The caller records the lost attempt through `retry`/`dead` (counter
-- `recovered`). One call per queue per heartbeat does all of it.
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  meta hash: `watched_at`, when the last pass of any worker ran (ms); `fence`;
--          `liveness`, a counter of liveness sessions
-- KEYS[4]  recovered sorted set
-- KEYS[5]  watchers hash: owner prefix -> `<since>:<confirmed>:<due>:<stale>:<suspect>:<channel>`
-- KEYS[6]  owners sorted set: owner prefix + 16-digit token, per lease token a worker may hold
-- ARGV[1]  lease duration in ms (for the extended leases and the caller's new ones)
-- ARGV[2]  the most leases to take over (0..1000; 0: extend only, no pass)
-- ARGV[3]  watch gap in ms: a pass this long after the previous one means nobody watched
-- ARGV[4]  the caller's owner prefix `<len>:<worker>:` ('' for a caller that is no worker: it
--          has no liveness record, and no pass of its own looks at channels)
-- ARGV[5]  the channel the caller's liveness connection is subscribed to ('' while it is down)
-- ARGV[6]  the caller's horizon: the highest token of this queue whose reply it has processed;
--          its tokens up to the horizon leave the owners set, then those of the leases it
--          holds are put back (0: no removal; a beat of more than 1000 leases is several
--          calls, and only the first removes)
-- ARGV[7]  how long from now the caller's next beat is due, in ms, tolerance included
-- ARGV[8..] the caller's leases `<id>:<token>` to extend (0..1000)
--
-- Liveness. A worker subscribes to a channel of its own (a new name per subscription) and
-- passes it here; this call checks the subscription is there (PUBSUB NUMSUB) and records it.
-- `since` is the value of the `liveness` counter when the caller's current channel was first
-- seen, `confirmed` its value when the worker's subscription was last seen alive (by its own
-- beat, or by another worker's pass). A worker V is gone when its channel has no subscriber,
-- while its record was confirmed at or after the caller's `since` and the caller's own channel
-- still has its subscriber: the caller's subscription has lasted since `since`, so Redis has
-- not restarted since (a restart drops every subscription, and a channel name is never
-- subscribed twice), so V's subscription was alive in this run of Redis and has closed since.
-- Two more conditions keep a live worker whose liveness connection alone broke (a proxy
-- resetting it) from being taken for dead: its channel must have been empty for SUSPECT_MS
-- (a suspect first), and V must be late for its own beat (`due`, which V sets at each beat:
-- its beat interval plus a tolerance; it must be later than the last amnesty, since a
-- lateness an outage explains is no sign of death). A live worker beats on time, and that
-- beat says its subscription is down (channel ''), which makes it no candidate. The leases of
-- a gone worker are those of its tokens in the owners set: every fetch and takeover records
-- its token there under its worker's prefix. A record whose `stale` time passed (ten of its
-- worker's leases without a beat) is forgotten by any pass.
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
-- Returns {held x n, next, waiting, up, pass...}: per lease of ARGV[4..], 1 extended or 0 lost
-- (another worker took the job over); how many ms from now the earliest lease of any worker
-- expires or a suspect is due for another look (-1 when neither: the caller may schedule a
-- pass for then); how many recovered jobs wait (so workers know to ask fetch for one); 1 when
-- the caller's liveness channel has its subscriber (0: the caller should subscribe again);
-- then, when a pass ran, {token, member...} (the caller's new token: its new leases are
-- `<id>:<token>`, and the members of the jobs taken over), {0} when nothing was taken over, or
-- {0, n, gap_ms} after an amnesty of n leases.

local SUSPECT_MS = 250

local lease_ms, limit, gap_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local me, channel, horizon, due_ms = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local n = #ARGV - 7
if not lease_ms or lease_ms <= 0 or not limit or limit < 0 or limit > MAX_BATCH
    or not gap_ms or gap_ms <= 0 or n < 0 or n > MAX_BATCH or not horizon or horizon < 0
    or not due_ms or due_ms <= 0 or (me ~= '' and not owner_prefix_ok(me)) then
  return fail('beat takes a positive lease, a limit in 0..' .. MAX_BATCH .. ', a positive gap, an owner prefix, a channel, a horizon, a positive due time and at most ' .. MAX_BATCH .. ' leases')
end
local now = now_ms()
local out = {}
-- When a suspect is due for another look, in ms from now.
local recheck

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

local function chunked(cmd, key, items)
  for first = 1, #items, MAX_BATCH do
    redis.call(cmd, key, unpack(items, first, math.min(#items, first + MAX_BATCH - 1)))
  end
end

-- The caller's tokens of the leases it still holds, in the order given (deterministic).
local held_tokens, held_order = {}, {}
if n > 0 then
  local leases = {}
  for i = 1, n do
    leases[i] = ARGV[i + 7]
  end
  local held = redis.call('ZMSCORE', KEYS[1], unpack(leases))
  local mine = {}
  for i = 1, n do
    out[i] = held[i] and 1 or 0
    if held[i] then
      mine[#mine + 1] = leases[i]
      local t = lease_token(leases[i])
      if t and not held_tokens[t] then
        held_tokens[t] = true
        held_order[#held_order + 1] = t
      end
    end
  end
  renew(mine)
end

local function parse(rec)
  local s, c, d, st, x, ch = string.match(rec or '', '^(%d+):(%d+):(%d+):(%d+):(%d+):(.*)$')
  if not s then
    return nil
  end
  return {since = tonumber(s), confirmed = tonumber(c), due = tonumber(d), stale = tonumber(st),
          suspect = tonumber(x), channel = ch}
end
local function store(who, r)
  redis.call('HSET', KEYS[5], who, r.since .. ':' .. r.confirmed .. ':' .. r.due .. ':'
    .. r.stale .. ':' .. r.suspect .. ':' .. r.channel)
end
-- A worker's members of the owners set: its prefix, then digits (';' sorts after '9').
local function owned(who)
  return redis.call('ZRANGEBYLEX', KEYS[6], '[' .. who, '(' .. who .. ';')
end
local function forget(who)
  redis.call('HDEL', KEYS[5], who)
  redis.call('ZREMRANGEBYLEX', KEYS[6], '[' .. who, '(' .. who .. ';')
end

-- The caller's liveness record and tokens.
local up, since, seq = 0, 0, 0
if me ~= '' then
  if channel ~= '' then
    up = tonumber(redis.call('PUBSUB', 'NUMSUB', channel)[2]) > 0 and 1 or 0
  end
  local old = parse(redis.call('HGET', KEYS[5], me))
  local r = {since = 0, confirmed = 0, due = now + due_ms, stale = now + 10 * lease_ms,
             suspect = 0, channel = ''}
  if up == 1 then
    if old and old.channel == channel and old.since > 0 then
      r.since = old.since
      r.confirmed = tonumber(redis.call('HGET', KEYS[3], 'liveness') or '0')
    else
      r.since = redis.call('HINCRBY', KEYS[3], 'liveness', 1)
      r.confirmed = r.since
    end
    r.channel = channel
  end
  since, seq = r.since, r.confirmed
  store(me, r)
  if horizon > 0 then
    redis.call('ZREMRANGEBYLEX', KEYS[6], '[' .. me, '[' .. owner_member(me, horizon))
  end
  local adds = {}
  for _, t in ipairs(held_order) do
    adds[#adds + 1] = 0
    adds[#adds + 1] = owner_member(me, t)
  end
  chunked('ZADD', KEYS[6], adds)
end

-- The earliest deadline after this call's own changes (the caller's leases are extended, and
-- the leases a pass takes over or forgives get a full lease), or a suspect's next look.
local function finish()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local next = #first == 0 and -1 or math.max(0, tonumber(first[2]) - now)
  if recheck and (next < 0 or recheck < next) then
    next = recheck
  end
  out[#out + 1] = next
  out[#out + 1] = redis.call('ZCARD', KEYS[4])
  out[#out + 1] = up
end
if limit == 0 then
  finish()
  return out
end

local watched = tonumber(redis.call('HGET', KEYS[3], 'watched_at'))
redis.call('HSET', KEYS[3], 'watched_at', now)
if watched and now - watched > gap_ms then
  -- Every worker missed its beats: their lateness up to now says nothing (`due`).
  redis.call('HSET', KEYS[3], 'amnesty_at', now)
  local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + lease_ms)
  renew(stale)
  finish()
  out[#out + 1] = 0
  out[#out + 1] = #stale
  out[#out + 1] = now - watched
  return out
end

local takeover, taken = {}, {}
local function take(lease, most)
  if not taken[lease] and #takeover < (most or limit) then
    taken[lease] = true
    takeover[#takeover + 1] = lease
  end
end

-- A stale record belongs to a worker long gone (its leases expired and were taken over), a
-- malformed one to no worker: any pass forgets them. Then the workers whose channel emptied
-- (only a caller whose own subscription holds can tell).
local cands = {}
if me ~= '' then
  local all = redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    local who, r = all[i], parse(all[i + 1])
    if who ~= me then
      if not r or now > r.stale then
        forget(who)
      elseif up == 1 and r.channel ~= '' then
        cands[#cands + 1] = {who = who, r = r}
      end
    end
  end
end
if #cands > 0 then
  local amnesty_at = tonumber(redis.call('HGET', KEYS[3], 'amnesty_at') or '0')
  local gone = {}
  for first = 1, #cands, MAX_BATCH do
    local chans = {}
    for i = first, math.min(#cands, first + MAX_BATCH - 1) do
      chans[#chans + 1] = cands[i].r.channel
    end
    local counts = redis.call('PUBSUB', 'NUMSUB', unpack(chans))
    for j = 1, #chans do
      local c = cands[first + j - 1]
      local wait
      if tonumber(counts[2 * j]) > 0 then
        -- Seen alive by a caller whose own subscription holds: as good as its own beat for
        -- any watcher subscribed since `seq` or earlier (written once per new session).
        if c.r.confirmed < since or c.r.suspect ~= 0 then
          c.r.confirmed = math.max(c.r.confirmed, seq)
          c.r.suspect = 0
          store(c.who, c.r)
        end
      elseif c.r.confirmed >= since and c.r.due > amnesty_at then
        if c.r.suspect == 0 then
          c.r.suspect = now
          store(c.who, c.r)
        end
        if now - c.r.suspect >= SUSPECT_MS and now > c.r.due then
          gone[#gone + 1] = c.who
        else
          wait = math.max(c.r.suspect + SUSPECT_MS, c.r.due + 1) - now
        end
      end
      if wait and (not recheck or wait < recheck) then
        recheck = wait
      end
    end
  end
  if #gone > 0 then
    local theirs = {}
    for _, who in ipairs(gone) do
      for _, m in ipairs(owned(who)) do
        theirs[tonumber(string.sub(m, #who + 1))] = true
      end
    end
    -- Rare (a worker died), so a scan of the active set is affordable here; it takes up to
    -- MAX_BATCH leases, whatever the limit, so that a worker holding many costs few scans.
    local more = false
    for _, l in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
      local t = tonumber(lease_token(l))
      if t and theirs[t] then
        if #takeover == MAX_BATCH then
          more = true
          break
        end
        take(l, MAX_BATCH)
      end
    end
    if more then
      recheck = 0
    else
      for _, who in ipairs(gone) do
        forget(who)
      end
    end
  end
end

-- Expired leases, whoever held them.
if #takeover < limit then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
  for _, l in ipairs(expired) do
    take(l)
  end
end
if #takeover == 0 then
  finish()
  out[#out + 1] = 0
  return out
end
local token = redis.call('HINCRBY', KEYS[3], 'fence', 1)
if me ~= '' then
  redis.call('ZADD', KEYS[6], 0, owner_member(me, token))
end
redis.call('ZREM', KEYS[1], unpack(takeover))
local members = {}
for i = 1, #takeover do
  local id = lease_id(takeover[i])
  local member = id and redis.call('HGET', KEYS[2], id)
  if member then
    redis.call('ZADD', KEYS[1], now + lease_ms, id .. ':' .. token)
    members[#members + 1] = member
  end
end
finish()
out[#out + 1] = token
for i = 1, #members do
  out[#out + 1] = members[i]
end
return out
