-- enqueue: adds jobs to a queue, honouring idempotency keys (SET NX).
--
-- KEYS[1]    pending sorted set
-- KEYS[2]    scheduled sorted set
-- KEYS[3]    wake list
-- KEYS[4]    meta hash (is the `events` flag on?)
-- KEYS[5]    events stream (also the pub/sub channel of lifecycle events)
-- KEYS[5+k]  the k-th distinct idempotency key used by this batch
-- ARGV[1]    number of jobs n (1..1000)
-- ARGV[...]  four values per job: member, run_at_ms (0 = now), k (0 = no unique key),
--            unique ttl in ms
--
-- Returns one value per job: nil when the job was created, or the id of the job that already
-- holds its idempotency key (nothing is created then).

local n = tonumber(ARGV[1])
if not n or n < 1 or n > MAX_BATCH then
  return fail('enqueue takes 1 to ' .. MAX_BATCH .. ' jobs, got ' .. tostring(ARGV[1]))
end
if #ARGV ~= 1 + 4 * n then
  return fail('enqueue expects 4 arguments per job')
end

-- Validate everything before the first write: Redis keeps a script's partial writes.
for i = 0, n - 1 do
  local member, at, k, ttl = ARGV[2 + i * 4], tonumber(ARGV[3 + i * 4]), tonumber(ARGV[4 + i * 4]), tonumber(ARGV[5 + i * 4])
  if #member < 29 then
    return fail('job ' .. (i + 1) .. ': member is shorter than its 28-byte header')
  end
  if not at or not k or not ttl then
    return fail('job ' .. (i + 1) .. ': run_at, unique index and ttl must be numbers')
  end
  if k > 0 and (KEYS[5 + k] == nil or ttl <= 0) then
    return fail('job ' .. (i + 1) .. ': unique key ' .. k .. ' is not in KEYS or has no ttl')
  end
end

local now = now_ms()
local pending, scheduled, out, created, dups = {}, {}, {}, {}, {}
for i = 0, n - 1 do
  local member, at, k, ttl = ARGV[2 + i * 4], tonumber(ARGV[3 + i * 4]), tonumber(ARGV[4 + i * 4]), ARGV[5 + i * 4]
  local existing = false
  if k > 0 then
    if not redis.call('SET', KEYS[5 + k], member_id(member), 'NX', 'PX', ttl) then
      existing = redis.call('GET', KEYS[5 + k])
      -- The event names the job the caller was handed, so it shows in that job's history.
      dups[#dups + 1] = existing
    end
  end
  out[i + 1] = existing
  if not existing then
    created[#created + 1] = member_id(member)
    if at > now then
      scheduled[#scheduled + 1] = at
      scheduled[#scheduled + 1] = member
    else
      pending[#pending + 1] = 0
      pending[#pending + 1] = member
    end
  end
end

if #pending > 0 then
  redis.call('ZADD', KEYS[1], unpack(pending))
end
if #scheduled > 0 then
  redis.call('ZADD', KEYS[2], unpack(scheduled))
end
-- Delayed jobs wake workers too: a sleeping worker must learn of an earlier due time.
if #pending + #scheduled > 0 then
  wake(KEYS[3])
end
emit(KEYS[4], KEYS[5], 'enqueued', created, now)
emit(KEYS[4], KEYS[5], 'deduplicated', dups, now)
return out
