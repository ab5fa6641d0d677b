-- Finish reservation ARGV[10] of offer ARGV[9]: free its unit and count the ARGV[11] tokens it
-- actually used in the offer's tokens-per-minute window (in place of the estimate). Returns 1 if
-- the unit was held until now, else 0; a repeated call changes nothing.
local ref, rid = ARGV[9], ARGV[10]
local released = redis.call('ZREM', P_INFLIGHT .. ref, rid)
if released == 1 then redis.call('ZREM', RESERVATIONS, member(ref, rid)) end
local recorded = set_tokens(ref, rid, tonumber(ARGV[11]))
if released == 1 or recorded then emit_capacity(ref) end
return released
