-- Sliding-window log (exact): one sorted-set entry per admitted request, scored by its time;
-- a request is admitted when fewer than `max` entries lie in (now - window, now]. Memory grows
-- with `max` per subject, which is the price of exactness.
local function sliding_log(key, max, window, now, nonce)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local allowed = count < max
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local first = tonumber(oldest[2]) or now
  -- The window is full again (empty) once the oldest entry leaves it.
  local reset = (count == 0) and 0 or (first + window - now)
  local retry = allowed and 0 or (first + window - now)
  local remaining = allowed and (max - count - 1) or 0
  local commit = function()
    redis.call('ZADD', key, now, string.format('%.3f', now) .. ':' .. nonce)
    redis.call('PEXPIRE', key, math.ceil(window))
  end
  return allowed, remaining, reset, retry, commit
end
