-- Give back reservation ARGV[10] of offer ARGV[9] unused (its tokens leave the window too).
-- Returns 1 if it was held, 0 if it was already released, settled or expired.
local ref, rid = ARGV[9], ARGV[10]
if redis.call('ZREM', P_INFLIGHT .. ref, rid) == 0 then return 0 end
redis.call('ZREM', RESERVATIONS, member(ref, rid))
set_tokens(ref, rid, nil)
emit_capacity(ref)
return 1
