-- Shared by the scripts that settle a failed attempt (retry, dead, discard, snooze): checks
-- the arguments and the lease before the first write, then takes the lease.

-- Returns an error reply when the lease and the member do not belong together, or nil.
local function check_lease(lease, member)
  if not member or #member < 29 then
    return fail('the member is shorter than its 28-byte header')
  end
  local id = lease_id(lease or '')
  if not id or id ~= member_id(member) then
    return fail('lease ' .. tostring(lease) .. ' does not match the member')
  end
  return nil
end

-- The counter a failed attempt bumps besides its action's own: only the two the protocol
-- defines, since it names a field of the stats hash.
local function check_counter(counter)
  if counter ~= 'failed' and counter ~= 'recovered' then
    return fail('unknown counter ' .. tostring(counter))
  end
  return nil
end

-- Removes the lease if the caller still holds it (fencing): returns the job id, or false when
-- the lease was lost (another worker owns the job; nothing is changed).
local function take_lease(active, inflight, lease)
  if not redis.call('ZSCORE', active, lease) then
    return false
  end
  local id = lease_id(lease)
  redis.call('ZREM', active, lease)
  redis.call('HDEL', inflight, id)
  return id
end

-- Takes the lease and records one failed attempt: the counter, the throughput ring and the
-- `failed` event. Returns the job id and the time, or false when the lease was lost.
-- F: the script's keys (active, inflight, stats, throughput, meta, events).
local function record_failure(F, lease, counter, err)
  local id = take_lease(F.active, F.inflight, lease)
  if not id then
    return false
  end
  local now = now_ms()
  redis.call('HINCRBY', F.stats, counter, 1)
  count(F.throughput, 'f', 1, now)
  emit(F.meta, F.events, 'failed', {id}, now, err)
  return id, now
end
