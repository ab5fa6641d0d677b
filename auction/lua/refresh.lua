-- Heartbeat of session ARGV[9]: each live offer it owns lives another ttl_ms from now.
-- Refs it no longer owns leave its set. An offer whose ttl already passed is not revived: the
-- sweep removes it. Returns how many offers were extended.
local session = ARGV[9]
local set = P_SESSION .. session
local count = 0
for _, ref in ipairs(redis.call('SMEMBERS', set)) do
  local key = P_OFFER .. ref
  local f = redis.call('HMGET', key, 'session', 'expires_ms', 'ttl_ms')
  if f[1] ~= session then
    redis.call('SREM', set, ref)
  elseif tonumber(f[2]) > NOW then
    local expires = NOW + tonumber(f[3])
    redis.call('HSET', key, 'expires_ms', int(expires))
    -- The expiry index may keep an earlier score (see upsert.lua), never a later one.
    if expires < tonumber(f[2]) then redis.call('ZADD', EXPIRY, int(expires), ref) end
    count = count + 1
  end
end
return count
