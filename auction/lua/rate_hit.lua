-- Count one request against a sliding-window limit, estimated from two fixed windows.
-- KEYS: 1 this window's counter, 2 the previous window's counter.
-- ARGV: 1 limit per window, 2 ms elapsed in this window, 3 window ms.
-- The estimate is prev * (window - elapsed) / window + this; all compared in integers.
-- Returns {1, 0} when allowed (and counted), else {0, retry_after_ms}; refusals are not counted.
local limit, elapsed, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
if prev * (window - elapsed) + (cur + 1) * window <= limit * window then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  return {1, 0}
end
local retry
if cur + 1 > limit then
  -- Wait for the next window, then until this window's count has decayed enough.
  retry = (window - elapsed) + math.ceil(window * (cur + 1 - limit) / cur)
else
  -- Wait until the previous window's share has decayed enough.
  retry = math.ceil(window * (prev + cur + 1 - limit) / prev) - elapsed
end
return {0, math.max(1, retry)}
