-- Hold an amount against a key's budget, atomically: spent + live holds + amount <= budget.
-- KEYS: 1 account hash, 2 holds zset (id -> expires ms), 3 hold amounts, 4 hold periods,
--       5 settled marks.
-- ARGV: 1 hold id, 2 amount nanos, 3 ttl ms, 4 now ms ('' = this server's TIME).
-- Returns {status, spent, held, budget}; status is ok | over | used | no_account | revoked.
-- Numbers are nano-USD below 2^53, exact in Lua doubles; '%d' keeps them out of exponent form.

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  redis.replicate_commands() -- Redis 6.2 needs it before TIME in a writing script; 7 ignores it
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- day: days since the epoch; month: year * 12 + month - 1 (UTC); total: 0.
local function period_id(period, now)
  if period == 'total' then return 0 end
  local days = math.floor(now / 86400000)
  if period == 'day' then return days end
  -- civil_from_days (H. Hinnant): days since 1970-01-01 -> proleptic Gregorian year and month
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  return year * 12 + month - 1
end

-- Start a new tally when the clock has entered a later period (never go back on a clock skew).
local function roll(account, now)
  local pid = period_id(redis.call('HGET', account, 'period'), now)
  local stored = tonumber(redis.call('HGET', account, 'period_id') or '')
  if stored ~= nil and stored >= pid then return stored end
  redis.call('HSET', account, 'spent', '0', 'period_id', string.format('%d', pid))
  return pid
end

local function purge(holds, amounts, periods, now)
  local gone = redis.call('ZRANGEBYSCORE', holds, '-inf', string.format('%d', now))
  for _, id in ipairs(gone) do
    redis.call('HDEL', amounts, id)
    redis.call('HDEL', periods, id)
    redis.call('ZREM', holds, id)
  end
end

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
