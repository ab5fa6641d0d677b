-- Take one unit of an offer's capacity for reservation ARGV[10] (ref ARGV[9]) for ARGV[11] ms,
-- with ARGV[12] tokens against its tokens per minute, if the offer is live and still at the
-- prices that cleared (ARGV[13..15]). Returns {result, live reservations after the call}.
local ref, rid = ARGV[9], ARGV[10]
local ttl, tokens = tonumber(ARGV[11]), tonumber(ARGV[12])
local f = redis.call('HMGET', P_OFFER .. ref, 'expires_ms', 'in', 'out', 'cached', 'concurrency', 'tpm')
if not f[1] or tonumber(f[1]) <= NOW then return {'gone', 0} end
if f[2] ~= ARGV[13] or f[3] ~= ARGV[14] or f[4] ~= ARGV[15] then return {'repriced', 0} end
local inflight = P_INFLIGHT .. ref
local count = live_in_flight(ref)
if redis.call('ZSCORE', inflight, rid) then return {'ok', count} end -- a repeated call
if count >= tonumber(f[5]) then return {'no_capacity', count} end
if f[6] and f[6] ~= '' then
  if tokens_in_window(ref) + tokens > tonumber(f[6]) then return {'no_capacity', count} end
  local window, amounts = P_WINDOW .. ref, P_AMOUNTS .. ref
  redis.call('ZADD', window, int(NOW), rid)
  redis.call('HSET', amounts, rid, int(tokens))
  redis.call('HINCRBY', amounts, '', int(tokens))
  -- Every entry is out of the window a minute after the newest, so the keys may go then.
  redis.call('PEXPIRE', window, TPM_WINDOW_MS)
  redis.call('PEXPIRE', amounts, TPM_WINDOW_MS)
end
local expires = int(NOW + ttl)
redis.call('ZADD', inflight, expires, rid)
redis.call('ZADD', RESERVATIONS, expires, member(ref, rid))
if redis.call('PTTL', inflight) < ttl then redis.call('PEXPIRE', inflight, int(ttl)) end
emit_capacity(ref)
return {'ok', count + 1}
