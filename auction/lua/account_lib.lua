-- Helpers shared by hold.lua and hold_settle.lua, sent in front of each (auction/scripts.py):
-- the clock, the budget period id, period rollover, and the purge of expired holds.

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
