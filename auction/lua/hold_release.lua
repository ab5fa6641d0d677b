-- Release a hold without charging; releasing an absent hold is a no-op.
-- KEYS: 1 holds zset, 2 hold amounts, 3 hold periods; ARGV[1] hold id.
-- Returns 1 when a hold was removed, else 0.
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
