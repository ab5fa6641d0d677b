-- Register a provider and index its bidder-token hash, unless the name is taken.
-- KEYS: 1 providers hash (name -> JSON), 2 tokens hash (token hash -> name).
-- ARGV: 1 name, 2 registration JSON, 3 token hash. Returns 1, or 0 when the name is taken.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
