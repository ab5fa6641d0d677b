-- Change a key's budget, and optionally its period (a new period starts a fresh tally).
-- KEYS[1] account hash; ARGV[1] budget nanos, ARGV[2] period or '' to keep it.
-- Returns 1, or 0 when there is no such account.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'budget', ARGV[1])
local period = ARGV[2]
if period ~= '' and period ~= redis.call('HGET', KEYS[1], 'period') then
  -- An empty period id makes the next hold or settle start the current period from zero.
  redis.call('HSET', KEYS[1], 'period', period, 'spent', '0', 'period_id', '')
end
return 1
