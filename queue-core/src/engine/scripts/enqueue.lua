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

local K = { pending = KEYS[1], scheduled = KEYS[2], wake = KEYS[3], meta = KEYS[4], events = KEYS[5], unique = 5 }
local invalid = check_jobs(K, 2, n)
if invalid then
  return invalid
end
return enqueue_jobs(K, 2, n)
