-- replay: moves a dead-lettered job back to its queue with a fresh set of attempts.
--
-- KEYS[1]  dead sorted set
-- KEYS[2]  dead jobs hash
-- KEYS[3]  pending sorted set
-- KEYS[4]  wake list
-- ARGV[1]  job id
-- ARGV[2]  the job's member, re-encoded with its attempt count reset
--
-- Returns 1 when replayed, 0 when no dead job has this id.

local id, member = ARGV[1], ARGV[2]
if #member < 29 or member_id(member) ~= id then
  return fail('replay expects the member of job ' .. tostring(id))
end
if redis.call('HEXISTS', KEYS[2], id) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[3], 0, member)
wake(KEYS[4])
return 1
