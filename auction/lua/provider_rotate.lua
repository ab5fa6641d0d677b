-- Replace a provider's bidder token, if its registration is still the one the caller read.
-- KEYS: 1 providers hash, 2 tokens hash.
-- ARGV: 1 name, 2 the token hash the caller read, 3 new token hash, 4 new registration JSON.
-- Returns 1, 0 when there is no such provider, -1 when it changed meanwhile (read again).
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then
  return 0
end
if cjson.decode(record)['token_hash'] ~= ARGV[2] then
  return -1
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
