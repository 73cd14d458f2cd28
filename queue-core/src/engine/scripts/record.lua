-- record: adds a worker's metrics of one minute (engine/history.rs) to the queue's history. The
-- worker counts every attempt it settled (the completions and failures Redis recorded) in
-- memory and sends them with its heartbeat, once a second, so the history costs the hot path
-- nothing.
--
-- KEYS[1]  the metrics hash of that minute
-- KEYS[2]  the metrics hash of that minute's hour (optional): gets the same increments
-- ARGV[1]  the hash's lifetime in ms
-- ARGV[2]  the number of pairs m (0..10000)
-- ARGV[3..] m pairs: a field `<metric>|<job name>` (at most 1024 bytes) and a count (digits)
--
-- Returns the number of fields added to. A hash's lifetime restarts whenever one of its
-- fields is new, so it lives until ARGV[1] after its last writer.

-- A count as the worker sends it: decimal digits, no sign, exponent or fraction, and short
-- enough to be exact in Lua's doubles.
local function count(s)
  if #s > 15 or not string.find(s, '^%d+$') then
    return nil
  end
  return tonumber(s)
end

local ttl, m = count(ARGV[1]), count(ARGV[2])
if not ttl or ttl < 1 or not m or m > 10000 or #ARGV ~= 2 + 2 * m then
  return fail('record expects a lifetime, a count m and m field/increment pairs')
end
for j = 1, m do
  if not count(ARGV[2 + 2 * j]) or #ARGV[1 + 2 * j] > 1024 then
    return fail('pair ' .. j .. ' is not a field of at most 1024 bytes and a count')
  end
end
for _, key in ipairs(KEYS) do
  local fresh = false
  for j = 1, m do
    local by = count(ARGV[2 + 2 * j])
    if redis.call('HINCRBY', key, ARGV[1 + 2 * j], by) == by then
      fresh = true
    end
  end
  -- A hash without a lifetime (written by hand, or persisted) gets one too.
  if fresh or (m > 0 and redis.call('PTTL', key) == -1) then
    redis.call('PEXPIRE', key, ttl)
  end
end
return m
