-- Sliding-window counter (cheap, approximate): counts of the current and previous fixed windows
-- in one small hash; the previous window's count is weighted by how much of it still overlaps
-- the sliding window. At most `max` per fixed window; in a sliding window fewer than 2 * max,
-- because a burst at the end of the previous window is undercounted by up to `max * f` (f: the
-- fraction of the current window elapsed).
local function sliding_counter(key, max, window, now)
  local cur = math.floor(now / window)
  local h = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if w ~= cur then
    if w == cur - 1 then
      p = c
    else
      p = 0
    end
    c = 0
  end
  local into = (now % window) / window
  local estimate = p * (1 - into) + c
  local allowed = estimate + 1 <= max
  local remaining = allowed and math.max(0, math.floor(max - estimate - 1)) or 0
  local reset = window - (now % window)
  local retry = 0
  if not allowed then
    if c + 1 > max or p == 0 then
      retry = reset
    else
      -- When the previous window's weight has fallen enough for one more request.
      retry = math.min(reset, (estimate + 1 - max) / p * window)
    end
  end
  local commit = function()
    redis.call('HSET', key, 'w', cur, 'c', c + 1, 'p', p)
    redis.call('PEXPIRE', key, math.ceil(2 * window))
  end
  return allowed, remaining, reset, retry, commit
end
