-- extend: a worker's heartbeat; pushes back the deadline of the leases it still holds.
--
-- KEYS[1]  active sorted set
-- ARGV[1]  lease duration in ms
-- ARGV[2..] leases `<id>:<token>` (at most 1000)
--
-- Returns one integer per lease: 1 extended, 0 lost (the job was reclaimed by another worker).

local lease_ms = tonumber(ARGV[1])
local n = #ARGV - 1
if not lease_ms or lease_ms <= 0 or n < 1 or n > MAX_BATCH then
  return fail('extend takes a positive lease and 1..' .. MAX_BATCH .. ' leases')
end
local leases = {}
for i = 1, n do
  leases[i] = ARGV[i + 1]
end
local held = redis.call('ZMSCORE', KEYS[1], unpack(leases))
local deadline = now_ms() + lease_ms
local out, adds = {}, {}
for i = 1, n do
  if held[i] then
    out[i] = 1
    adds[#adds + 1] = deadline
    adds[#adds + 1] = leases[i]
  else
    out[i] = 0
  end
end
if #adds > 0 then
  redis.call('ZADD', KEYS[1], 'XX', unpack(adds))
end
return out
