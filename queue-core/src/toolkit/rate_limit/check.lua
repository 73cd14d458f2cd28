-- rate_limit: checks every limit of one request atomically and consumes from all of them only
-- if all allow it (a rejected request costs nothing).
--
-- KEYS[1]    the subject's block key (set by an external 429: rejects until it expires)
-- KEYS[1+i]  the key of the i-th limit
-- ARGV[1]    a nonce (unique per call, for sliding-log entries)
-- ARGV[...]  four values per limit: algorithm (log | counter | gcra), max, window in ms, burst
--
-- Returns {allowed, now_ms, then per limit: allowed, remaining, reset_ms, retry_ms}. Times are
-- strings with microsecond precision.

local nonce = ARGV[1]
local n = (#ARGV - 1) / 4
if n < 1 or n ~= math.floor(n) or #KEYS ~= n + 1 then
  return fail('rate_limit takes a nonce and 4 values per limit, and one key per limit')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {0, string.format('%.3f', now)}

local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then
  for _ = 1, n do
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tostring(blocked)
    out[#out + 1] = tostring(blocked)
  end
  return out
end

local all, commits = true, {}
for i = 0, n - 1 do
  local algo, max, window, burst = ARGV[2 + i * 4], tonumber(ARGV[3 + i * 4]), tonumber(ARGV[4 + i * 4]), tonumber(ARGV[5 + i * 4])
  if not max or max < 1 or not window or window <= 0 or not burst or burst < 1 then
    return fail('limit ' .. (i + 1) .. ': max, window and burst must be positive')
  end
  local key = KEYS[2 + i]
  local allowed, remaining, reset, retry, commit
  if algo == 'log' then
    allowed, remaining, reset, retry, commit = sliding_log(key, max, window, now, nonce)
  elseif algo == 'counter' then
    allowed, remaining, reset, retry, commit = sliding_counter(key, max, window, now)
  elseif algo == 'gcra' then
    allowed, remaining, reset, retry, commit = gcra(key, max, window, burst, now)
  else
    return fail('unknown algorithm ' .. tostring(algo))
  end
  all = all and allowed
  commits[#commits + 1] = commit
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = string.format('%.3f', math.max(0, reset))
  out[#out + 1] = string.format('%.3f', math.max(0, retry))
end
if all then
  for _, commit in ipairs(commits) do
    commit()
  end
  out[1] = 1
else
  -- A rejected request consumes nothing: remaining counts were computed for admission.
  for i = 0, n - 1 do
    if out[3 + i * 4] == 1 then
      out[4 + i * 4] = out[4 + i * 4] + 1
    end
  end
end
return out
