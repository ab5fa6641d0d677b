-- Remove a provider and its bidder token.
-- KEYS: 1 providers hash, 2 tokens hash; ARGV[1] name. Returns 1, or 0 when there is none.
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then
  return 0
end
local token_hash = cjson.decode(record)['token_hash']
if token_hash then
  redis.call('HDEL', KEYS[2], token_hash)
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
