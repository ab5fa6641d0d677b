-- Cancel on disconnect: remove every offer session ARGV[9] still owns (an offer another session
-- of the provider re-quoted is that session's now). Returns the refs removed.
local session = ARGV[9]
local set = P_SESSION .. session
local out = {}
for _, ref in ipairs(redis.call('SMEMBERS', set)) do
  if redis.call('HGET', P_OFFER .. ref, 'session') == session then
    remove_offer(ref, 'cancelled')
    out[#out + 1] = ref
  end
end
redis.call('DEL', set)
return out
