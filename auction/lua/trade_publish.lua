-- Publish one public trade: number it and append it to the feed's trade stream.
-- KEYS: the trade stream, the trade counter (both in slot {feed}).
-- ARGV: stream maxlen (approximate trimming), the trade's JSON.
-- The number `n` runs 1, 2, 3... without gaps, so a follower that finds a jump knows that
-- entries were trimmed before it read them. Returns {n, entry id}.
local n = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'trade', ARGV[2], 'n', n)
return {n, id}
