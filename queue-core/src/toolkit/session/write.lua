-- session_write: changes a session's data: an atomic merge (set and remove some fields), or,
-- with an expected version, a compare-and-set that fails if anyone wrote since the caller read.
--
-- KEYS[1]  the session hash
-- ARGV[1]  expected version (-1: merge without a check)
-- ARGV[2]  1 to remove every data field first (replace), 0 to merge
-- ARGV[3]  number of fields to remove, then their names, then field/value pairs to set
--
-- Returns {1, new version} written, {0, current version} version mismatch, {-1} no session.

local expected, replace, nrem = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
if not expected or not nrem or (#ARGV - 3 - nrem) % 2 ~= 0 then
  return fail('session_write takes a version, a replace flag and field lists')
end
local v = tonumber(redis.call('HGET', KEYS[1], 'v'))
if not v then
  return {-1}
end
local abs = tonumber(redis.call('HGET', KEYS[1], 'a')) or 0
local now = now_ms()
if now >= abs then
  redis.call('DEL', KEYS[1])
  return {-1}
end
if expected >= 0 and v ~= expected then
  return {0, v}
end
if replace then
  local all = redis.call('HKEYS', KEYS[1])
  for _, f in ipairs(all) do
    if string.sub(f, 1, 2) == 'd:' then
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
for i = 4, 3 + nrem do
  redis.call('HDEL', KEYS[1], 'd:' .. ARGV[i])
end
local sets = {}
for i = 4 + nrem, #ARGV, 2 do
  sets[#sets + 1] = 'd:' .. ARGV[i]
  sets[#sets + 1] = ARGV[i + 1]
end
if #sets > 0 then
  redis.call('HSET', KEYS[1], unpack(sets))
end
local nv = redis.call('HINCRBY', KEYS[1], 'v', 1)
local idle = tonumber(redis.call('HGET', KEYS[1], 'i')) or 0
redis.call('PEXPIRE', KEYS[1], math.max(1, math.min(idle, abs - now)))
return {1, nv}
