-- Shared by `enqueue` and `cron_fire`, so a cron tick is enqueued exactly as any job is: the
-- same validation, idempotency keys, wake-up and lifecycle events.
--
-- K is the caller's key table: K.pending, K.scheduled, K.wake, K.meta, K.events, and K.unique,
-- the index in KEYS after which the batch's distinct idempotency keys follow (KEYS[K.unique + k]
-- is the k-th). Jobs are four values each in ARGV from `base` on: member, run_at_ms (0 = now),
-- k (0 = no unique key), unique ttl in ms.

-- A member's 28-byte header: two lowercase hex digits of (255 - priority), then a canonical
-- ULID (its first character at most 7, all uppercase Crockford base32). A run of the class
-- rather than 25 items is half the cost; the run covers the header when it reaches byte 28.
local HEADER = '^[0-9a-f][0-9a-f][0-7][0-9A-HJKMNP-TV-Z]*'

-- Returns an error reply for the first invalid job, or nil. Run it before the first write:
-- Redis keeps a script's partial writes.
local function check_jobs(K, base, n)
  local cap = payload_cap(redis.call('HGET', K.meta, 'max_payload'))
  for i = 0, n - 1 do
    local j = base + i * 4
    local member, at, k, ttl = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
    if not member or #member < 29 then
      return fail('job ' .. (i + 1) .. ': member is shorter than its 28-byte header')
    end
    -- The header is what orders and names the job: two lowercase hex digits of priority and
    -- a canonical ULID (uppercase Crockford base32, as every reader parses it; a lowercase id
    -- would run, but no lookup could find it).
    -- One match over the 28 header bytes (it runs for every job of every enqueue).
    local _, header_end = string.find(member, HEADER)
    if not header_end or header_end < 28 then
      return fail('job ' .. (i + 1) .. ': the header must be two lowercase hex digits (255 - priority) and a canonical ULID (26 uppercase Crockford base32 characters)')
    end
    if #member > cap then
      return fail('job ' .. (i + 1) .. ': member of ' .. #member .. ' bytes exceeds the queue\'s payload cap of ' .. cap .. ' bytes (meta max_payload)')
    end
    if not at or not k or not ttl then
      return fail('job ' .. (i + 1) .. ': run_at, unique index and ttl must be numbers')
    end
    -- The TTL goes to SET PX, which takes a whole number only: a refusal there would come
    -- after earlier jobs' keys were set, and a batch is all or nothing.
    if k > 0 and (KEYS[K.unique + k] == nil or not string.match(ARGV[j + 3], '^[1-9]%d*$')) then
      return fail('job ' .. (i + 1) .. ': unique key ' .. k .. ' is not in KEYS or its ttl is not a whole number of ms')
    end
  end
  return nil
end

-- Adds the jobs; returns one value per job: false when created, or the id of the job that
-- already holds its idempotency key (nothing is created then).
local function enqueue_jobs(K, base, n)
  local now = now_ms()
  local pending, scheduled, out, created, dups = {}, {}, {}, {}, {}
  for i = 0, n - 1 do
    local j = base + i * 4
    local member, at, k, ttl = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]), ARGV[j + 3]
    local existing = false
    if k > 0 then
      if not redis.call('SET', KEYS[K.unique + k], member_id(member), 'NX', 'PX', ttl) then
        existing = redis.call('GET', KEYS[K.unique + k])
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
    redis.call('ZADD', K.pending, unpack(pending))
  end
  if #scheduled > 0 then
    redis.call('ZADD', K.scheduled, unpack(scheduled))
  end
  -- Delayed jobs wake workers too: a sleeping worker must learn of an earlier due time.
  if #pending + #scheduled > 0 then
    wake(K.wake)
  end
  emit(K.meta, K.events, 'enqueued', created, now)
  emit(K.meta, K.events, 'deduplicated', dups, now)
  return out
end
