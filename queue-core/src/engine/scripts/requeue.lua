-- requeue: hands leased jobs back to the queue without counting an attempt (graceful shutdown).
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  pending sorted set
-- KEYS[4]  wake list
-- ARGV[...] leases `<id>:<token>` (1..1000)
--
-- Returns how many jobs went back (leases already lost are skipped).

local n = #ARGV
if n < 1 or n > MAX_BATCH then
  return fail('requeue takes 1..' .. MAX_BATCH .. ' leases')
end
local back = 0
for i = 1, n do
  local id = lease_id(ARGV[i])
  if id and redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    local member = redis.call('HGET', KEYS[2], id)
    if member then
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZADD', KEYS[3], 0, member)
      back = back + 1
    end
  end
end
if back > 0 then
  wake(KEYS[4])
end
return back
