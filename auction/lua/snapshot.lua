-- Read the model's live book: {version, last stream id, then per offer: ref, body, seq,
-- in-flight count, tokens in the last minute}. Atomic, so a follower that reads the stream
-- after the returned id misses no change and sees none twice.
local last = redis.call('XREVRANGE', CHANGES, '+', '-', 'COUNT', 1)
local out = {redis.call('GET', VERSION) or '0', last[1] and last[1][1] or '0-0'}
local cutoff = '(' .. int(NOW - TPM_WINDOW_MS)
for _, ref in ipairs(redis.call('ZRANGE', INDEX, 0, -1)) do
  local f = redis.call('HMGET', P_OFFER .. ref, 'body', 'seq', 'expires_ms')
  if f[1] and tonumber(f[3]) > NOW then
    local tokens = 0
    local rids = redis.call('ZRANGEBYSCORE', P_WINDOW .. ref, cutoff, '+inf')
    if #rids > 0 then
      for _, v in ipairs(redis.call('HMGET', P_AMOUNTS .. ref, unpack(rids))) do
        tokens = tokens + (tonumber(v) or 0)
      end
    end
    local in_flight = redis.call('ZCOUNT', P_INFLIGHT .. ref, '(' .. int(NOW), '+inf')
    for _, v in ipairs({ref, f[1], f[2], in_flight, int(tokens)}) do out[#out + 1] = v end
  end
end
return out
