-- record: adds a worker's metrics of one minute (engine/history.rs) to the queue's history. The
-- worker counts every attempt it settled (the completions and failures Redis recorded) in
-- memory and sends them with its heartbeat, once a second, so the history costs the hot path
-- nothing.
--
-- KEYS[1]  the metrics hash of that minute
-- ARGV[1]  the hash's lifetime in ms
-- ARGV[2]  the number of pairs m (0..10000)
-- ARGV[3..] m pairs: a field `<metric>|<job name>` (at most 1024 bytes) and an integer
--
-- Returns the number of fields added to. The hash's lifetime restarts whenever one of its
-- fields is new, so it lives until ARGV[1] after that minute's last writer.

local ttl, m = tonumber(ARGV[1]), tonumber(ARGV[2])
if not ttl or ttl < 1 or ttl ~= math.floor(ttl) or not m or m < 0 or m > 10000 or #ARGV ~= 2 + 2 * m then
  return fail('record expects a lifetime, a count m and m field/increment pairs')
end
for j = 1, m do
  local by = tonumber(ARGV[2 + 2 * j])
  if not by or by ~= math.floor(by) or #ARGV[1 + 2 * j] > 1024 then
    return fail('pair ' .. j .. ' is not a field of at most 1024 bytes and an integer')
  end
end
local fresh = false
for j = 1, m do
  local by = tonumber(ARGV[2 + 2 * j])
  if redis.call('HINCRBY', KEYS[1], ARGV[1 + 2 * j], by) == by then
    fresh = true
  end
end
if fresh then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return m
