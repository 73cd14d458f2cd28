-- redeem: hands a worker the leases of its last fetch when that fetch's reply never reached it
-- (the connection broke after Redis ran the script). Without this the leases would expire and
-- be recovered as lost attempts, though the worker never died.
--
-- KEYS[1]  active sorted set
-- KEYS[2]  inflight hash
-- KEYS[3]  meta hash (holds the caller's receipt: the token of its last fetch)
-- ARGV[1]  the caller's receipt field (`receipt:<worker id>`)
-- ARGV[2]  the token of the caller's last fetch whose reply it did receive (0 if none)
-- ARGV[3]  lease duration in ms (the redeemed leases get a fresh deadline)
--
-- Returns {token, member...}: the token and members of the caller's orphaned leases, or {0}
-- when its last fetch's reply had arrived (or leased nothing).

local receipt, known, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if not receipt or string.sub(receipt, 1, 8) ~= 'receipt:' or not known or not lease_ms or lease_ms <= 0 then
  return fail('redeem takes a receipt field, a known token and a positive lease')
end
local token = tonumber(redis.call('HGET', KEYS[3], receipt))
if not token or token == 0 or token == known then
  return {0}
end
local suffix = ':' .. token
local out, adds = {token}, {}
local deadline = now_ms() + lease_ms
-- The active set holds one entry per running job of every worker: bounded, and this runs only
-- after a broken connection.
for _, lease in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(lease, -#suffix) == suffix then
    local member = redis.call('HGET', KEYS[2], lease_id(lease))
    if member then
      out[#out + 1] = member
      adds[#adds + 1] = deadline
      adds[#adds + 1] = lease
    end
  end
end
if #adds > 0 then
  redis.call('ZADD', KEYS[1], 'XX', unpack(adds))
end
-- Redeemed once: the receipt now names a batch the caller holds.
redis.call('HSET', KEYS[3], receipt, 0)
return out
