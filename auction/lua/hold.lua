-- Hold an amount against a key's budget, atomically: spent + live holds + amount <= budget.
-- KEYS: 1 account hash, 2 holds zset (id -> expires ms), 3 hold amounts, 4 hold periods,
--       5 settled marks.
-- ARGV: 1 hold id, 2 amount nanos, 3 ttl ms, 4 now ms ('' = this server's TIME).
-- Returns {status, spent, held, budget}; status is ok | over | used | no_account | revoked.
-- Numbers are nano-USD below 2^53, exact in Lua doubles; '%d' keeps them out of exponent form.


local account, holds, amounts, periods, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local hold_id, amount, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = clock(ARGV[4])
if redis.call('EXISTS', account) == 0 then return {'no_account', 0, 0, 0} end
if redis.call('HGET', account, 'revoked') == '1' then return {'revoked', 0, 0, 0} end
purge(holds, amounts, periods, now)
local pid = roll(account, now)
local spent = tonumber(redis.call('HGET', account, 'spent'))
local budget = tonumber(redis.call('HGET', account, 'budget'))
local held = 0
for _, v in ipairs(redis.call('HVALS', amounts)) do held = held + tonumber(v) end

if redis.call('HEXISTS', settled, hold_id) == 1 then return {'used', spent, held, budget} end
local existing = redis.call('HGET', amounts, hold_id)
if existing then
  -- The same hold again (a retried call) changes nothing; another amount is a caller bug.
  if tonumber(existing) == amount then return {'ok', spent, held, budget} end
  return {'used', spent, held, budget}
end
if spent + held + amount > budget then return {'over', spent, held, budget} end
redis.call('ZADD', holds, string.format('%d', now + ttl), hold_id)
redis.call('HSET', amounts, hold_id, string.format('%d', amount))
redis.call('HSET', periods, hold_id, string.format('%d', pid))
return {'ok', spent, held + amount, budget}
