-- Settle a hold: charge at most its amount, once per hold id, to the period it was taken in.
-- KEYS: 1 account hash, 2 holds zset, 3 hold amounts, 4 hold periods, 5 settled marks,
--       6 settled order zset (id -> settled ms).
-- ARGV: 1 hold id, 2 charge nanos, 3 now ms ('' = this server's TIME), 4 ms to keep marks.
-- Returns {status, charged, counted}: status is settled | repeat | no_hold; counted is 1 when
-- the charge was added to the current period's spent (0: the hold's period has ended).

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
