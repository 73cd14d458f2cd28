-- delete: removes jobs that are not running from one state (operator action).
--
-- KEYS[1]    the state's sorted set: pending | scheduled | retry | dead | completed
-- KEYS[2]    the state's hash (dead jobs | results); for member states, KEYS[1] again
-- KEYS[2+k]  the k-th idempotency key to release
-- ARGV[1]    'member' when the sorted set holds whole jobs (pending, scheduled, retry),
--            'id' when it holds ids (dead, completed)
-- ARGV[...]  two values per job: the entry (member or id), k (0 = no idempotency key)
--
-- Returns how many jobs were removed (a job that changed state meanwhile is skipped).

local mode = ARGV[1]
if mode ~= 'member' and mode ~= 'id' then
  return fail('delete mode must be member or id')
end
local n = (#ARGV - 1) / 2
if n < 1 or n > MAX_BATCH or n ~= math.floor(n) then
  return fail('delete takes 1..' .. MAX_BATCH .. ' (entry, key index) pairs')
end
for i = 0, n - 1 do
  local k = tonumber(ARGV[3 + i * 2])
  if not k or (k > 0 and KEYS[2 + k] == nil) then
    return fail('job ' .. (i + 1) .. ': unique key index is not in KEYS')
  end
end
local removed = 0
for i = 0, n - 1 do
  local entry, k = ARGV[2 + i * 2], tonumber(ARGV[3 + i * 2])
  if redis.call('ZREM', KEYS[1], entry) == 1 then
    removed = removed + 1
    local id = entry
    if mode == 'id' then
      redis.call('HDEL', KEYS[2], entry)
    else
      id = member_id(entry)
    end
    if k > 0 then
      release_unique(KEYS[2 + k], id)
    end
  end
end
return removed
