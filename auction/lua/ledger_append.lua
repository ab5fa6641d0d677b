-- Append a settlement to the ledger once per clearing id.
-- KEYS: 1 ledger stream, 2 marks hash (clearing id -> entry id).
-- ARGV: 1 clearing id, then field, value, ... for the stream entry.
-- Returns the entry id: the existing one when the clearing was already written.
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return existing end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
