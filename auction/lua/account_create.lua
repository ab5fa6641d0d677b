-- Claim a client key's name and token hash in the {keys} index (the account hash is written first).
-- KEYS[1] by_name hash, KEYS[2] by_hash hash; ARGV[1] name, ARGV[2] key id, ARGV[3] token hash.
-- Returns 1, or 0 when the name is taken (the caller then deletes its orphan account hash).
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
return 1
