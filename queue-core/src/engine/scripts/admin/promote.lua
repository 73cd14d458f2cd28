-- promote: runs delayed or retrying jobs now (operator action): moves them to pending.
--
-- KEYS[1]  the sorted set they wait in: scheduled | retry
-- KEYS[2]  pending sorted set
-- KEYS[3]  wake list
-- ARGV[...] the jobs' members (1..1000)
--
-- Returns how many moved (a job that changed state meanwhile is skipped).

local n = #ARGV
if n < 1 or n > MAX_BATCH then
  return fail('promote takes 1..' .. MAX_BATCH .. ' members')
end
local moved = 0
for i = 1, n do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
    moved = moved + 1
  end
end
if moved > 0 then
  wake(KEYS[3])
end
return moved
