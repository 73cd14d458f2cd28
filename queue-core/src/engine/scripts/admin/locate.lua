-- locate: finds a pending job by id without knowing its priority, or lists the head of every
-- priority band. Read only. All pending members have score 0, so lexicographic ranges work:
-- each band is the members starting with the same two-digit priority prefix, and a band's head
-- is its oldest job (ids are ULIDs). At most 256 bands, each step O(log n).
--
-- KEYS[1]  pending sorted set
-- ARGV[1]  job id, or '' for the band heads
--
-- Returns the member of the job (nil if not pending), or the 28-byte header (prefix + id) of
-- each band's head, highest priority first.

local id = ARGV[1]
local out = {}
local start = '-'
for _ = 1, 256 do
  local head = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, 1)
  if #head == 0 then
    break
  end
  local prefix = string.sub(head[1], 1, 2)
  if id == '' then
    out[#out + 1] = string.sub(head[1], 1, 28)
  else
    local found = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. prefix .. id, '(' .. prefix .. id .. '\255', 'LIMIT', 0, 1)
    if #found > 0 then
      return found[1]
    end
  end
  -- Ids are ASCII, so every member of this band sorts below prefix .. '\255'.
  start = '(' .. prefix .. '\255'
end
if id == '' then
  return out
end
return false
