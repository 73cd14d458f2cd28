-- rate_block: pushes a subject back (an upstream answered 429): every check of the subject is
-- rejected until the block expires. A longer block replaces a shorter one, never the reverse.
--
-- KEYS[1]  the subject's block key
-- ARGV[1]  block duration in ms
--
-- Returns the block's remaining ms.

local ms = tonumber(ARGV[1])
if not ms or ms < 1 then
  return fail('rate_block takes a positive duration in ms')
end
local left = redis.call('PTTL', KEYS[1])
if left < ms then
  redis.call('SET', KEYS[1], '1', 'PX', math.ceil(ms))
  return math.ceil(ms)
end
return left
