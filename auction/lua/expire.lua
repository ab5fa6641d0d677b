-- The sweep: remove up to ARGV[9] offers whose ttl passed, and free up to as many reservations
-- whose ttl passed (telling followers the new in-flight counts). Returns {refs removed, more},
-- more = 1 when a limit was reached and another call has work left.
local limit = tonumber(ARGV[9])
local removed = {}
local refs = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', int(NOW), 'LIMIT', 0, limit)
for _, ref in ipairs(refs) do
  -- An expiry score may be early (upsert.lua keeps the earlier one): the offer's own expires_ms
  -- decides, and a live offer gets its true score back.
  local expires = redis.call('HGET', P_OFFER .. ref, 'expires_ms')
  if not expires then
    redis.call('ZREM', EXPIRY, ref)
  elseif tonumber(expires) > NOW then
    redis.call('ZADD', EXPIRY, expires, ref)
  elseif remove_offer(ref, 'expired') then
    removed[#removed + 1] = ref
  else
    redis.call('ZREM', EXPIRY, ref)
  end
end
local held = redis.call('ZRANGEBYSCORE', RESERVATIONS, '-inf', int(NOW), 'LIMIT', 0, limit)
local seen, touched = {}, {}
for _, m in ipairs(held) do
  local ref, rid = split_member(m)
  redis.call('ZREM', P_INFLIGHT .. ref, rid)
  redis.call('ZREM', RESERVATIONS, m)
  if not seen[ref] then
    seen[ref] = true
    touched[#touched + 1] = ref
  end
end
for _, ref in ipairs(touched) do emit_capacity(ref) end
local more = 0
if #refs == limit or #held == limit then more = 1 end
return {removed, more}
