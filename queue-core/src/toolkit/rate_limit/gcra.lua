-- GCRA (a token bucket without a refill loop): one key holds the theoretical arrival time
-- (TAT). Requests are spaced T = window / max apart on average; `burst` of them may arrive at
-- once. Exact: never more than `burst` at an instant, and never more than max + burst - 1 in
-- any window of length `window` (so never more than max when burst = 1).
local function gcra(key, max, window, burst, now)
  local t = window / max
  local tau = t * (burst - 1)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  local allowed = tat <= now + tau
  local new_tat = tat + t
  local remaining, retry, reset
  if allowed then
    remaining = math.max(0, math.floor((now + tau - new_tat) / t) + 1)
    reset = new_tat - now
    retry = 0
  else
    remaining = 0
    reset = tat - now
    retry = tat - (now + tau)
  end
  local commit = function()
    redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
  end
  return allowed, remaining, reset, retry, commit
end
