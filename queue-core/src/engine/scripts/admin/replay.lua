-- replay: moves dead-lettered jobs back to their queue with a fresh set of attempts.
--
-- KEYS[1]  dead sorted set
-- KEYS[2]  dead jobs hash
-- KEYS[3]  pending sorted set
-- KEYS[4]  wake list
-- ARGV[...] two values per job: id, the job's member re-encoded with its attempt count reset
--
-- Returns how many were replayed (ids no longer dead are skipped).

local n = #ARGV / 2
if n < 1 or n > MAX_BATCH or n ~= math.floor(n) then
  return fail('replay takes 1..' .. MAX_BATCH .. ' (id, member) pairs')
end
for i = 0, n - 1 do
  local id, member = ARGV[1 + i * 2], ARGV[2 + i * 2]
  if #member < 29 or member_id(member) ~= id then
    return fail('replay expects the member of job ' .. tostring(id))
  end
end
local replayed = 0
for i = 0, n - 1 do
  local id, member = ARGV[1 + i * 2], ARGV[2 + i * 2]
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[3], 0, member)
    replayed = replayed + 1
  end
end
if replayed > 0 then
  wake(KEYS[4])
end
return replayed
