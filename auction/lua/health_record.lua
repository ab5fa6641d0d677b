-- Record one provider call's outcome in an offer's passive health, shared by every process.
-- KEYS: 1 the offer's health hash, 2 the model's health changes zset (ref -> change number),
--       3 the model's health change counter.                         (all in slot {b:MODEL})
-- ARGV: 1 ref, 2 now ms, 3 'ok' | 'fail', 4 failures in a row that start a cool-down,
--       5 cool-down ms, 6 observed ttft ms ('' = none), 7 observed output tokens/s ('' = none),
--       8 EWMA weight of a new observation (0 < w <= 1), 9 ms an idle record is kept.
-- A failure while cooling down (a probe that failed) starts the cool-down again; a success
-- ends it. Observations update exponentially weighted averages (not money: floats are fine).
-- Returns {fails, cool_until, observations, ttft, tps, change number}; ttft/tps as strings.
local h = KEYS[1]
local now = tonumber(ARGV[2])
local f = redis.call('HMGET', h, 'fails', 'cool_until', 'n', 'ttft', 'tps')
local fails = tonumber(f[1] or '0')
local cool = tonumber(f[2] or '0')
local n = tonumber(f[3] or '0')
local ttft, tps = f[4] or '', f[5] or ''

local function ewma(old, new, weight)
  if old == '' then return string.format('%.3f', new) end
  local o = tonumber(old)
  return string.format('%.3f', o + weight * (new - o))
end

if ARGV[3] == 'fail' then
  fails = fails + 1
  if fails >= tonumber(ARGV[4]) then cool = now + tonumber(ARGV[5]) end
else
  fails = 0
  cool = 0
  local weight = tonumber(ARGV[8])
  if ARGV[6] ~= '' then
    n = n + 1
    ttft = ewma(ttft, tonumber(ARGV[6]), weight)
  end
  if ARGV[7] ~= '' then tps = ewma(tps, tonumber(ARGV[7]), weight) end
end

redis.call('HSET', h, 'fails', string.format('%d', fails), 'cool_until', string.format('%d', cool),
  'n', string.format('%d', n), 'ttft', ttft, 'tps', tps)
local keep = tonumber(ARGV[9])
redis.call('PEXPIRE', h, keep)
local version = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], version, ARGV[1])
redis.call('PEXPIRE', KEYS[2], keep)
return {fails, cool, n, ttft, tps, version}
