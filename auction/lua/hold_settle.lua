-- Settle a hold: charge at most its amount, once per hold id, to the period it was taken in.
-- KEYS: 1 account hash, 2 holds zset, 3 hold amounts, 4 hold periods, 5 settled marks,
--       6 settled order zset (id -> settled ms).
-- ARGV: 1 hold id, 2 charge nanos, 3 now ms ('' = this server's TIME), 4 ms to keep marks.
-- Returns {status, charged, counted}: status is settled | repeat | no_hold; counted is 1 when
-- the charge was added to the current period's spent (0: the hold's period has ended).


local account, holds, amounts, periods = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local settled, order = KEYS[5], KEYS[6]
local hold_id, charge = ARGV[1], tonumber(ARGV[2])
local now = clock(ARGV[3])
local prior = redis.call('HGET', settled, hold_id)
if prior then return {'repeat', tonumber(prior), 0} end
purge(holds, amounts, periods, now)
local amount = redis.call('HGET', amounts, hold_id)
if not amount then return {'no_hold', 0, 0} end -- released, expired or never taken

local charged = math.min(charge, tonumber(amount))
local hold_pid = tonumber(redis.call('HGET', periods, hold_id))
redis.call('ZREM', holds, hold_id)
redis.call('HDEL', amounts, hold_id)
redis.call('HDEL', periods, hold_id)
local counted = 0
if redis.call('EXISTS', account) == 1 and roll(account, now) == hold_pid then
  local spent = tonumber(redis.call('HGET', account, 'spent'))
  redis.call('HSET', account, 'spent', string.format('%d', spent + charged))
  counted = 1
end
redis.call('HSET', settled, hold_id, string.format('%d', charged))
redis.call('ZADD', order, string.format('%d', now), hold_id)
-- Forget marks older than the retention, a few per call so no call does unbounded work.
local old = redis.call('ZRANGEBYSCORE', order, '-inf', string.format('%d', now - tonumber(ARGV[4])),
  'LIMIT', 0, 100)
for _, id in ipairs(old) do
  redis.call('HDEL', settled, id)
  redis.call('ZREM', order, id)
end
return {'settled', charged, counted}
