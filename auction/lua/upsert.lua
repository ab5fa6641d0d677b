-- Post or re-quote offers of one model for a session.
-- ARGV[9] session, then per offer 8 values: ref, body (the offer's JSON object without seq),
-- input, output and cached input prices (micro-USD), concurrency, tokens per minute ('' = no
-- limit), ttl_ms. A new offer, or one whose prices changed, takes the next seq (it loses its time
-- priority); otherwise it keeps its seq. Returns the seqs in order.
local session = ARGV[9]
local seqs = {}
for i = 10, #ARGV, 8 do
  local ref, body, pin, pout, pcached = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local ttl = tonumber(ARGV[i + 7])
  local key = P_OFFER .. ref
  local old = redis.call('HMGET', key, 'seq', 'in', 'out', 'cached', 'body', 'session', 'expires_ms')
  local live = old[1] and tonumber(old[7]) > NOW
  local repriced = not live or old[2] ~= pin or old[3] ~= pout or old[4] ~= pcached
  local seq = old[1]
  if repriced then seq = int(redis.call('INCR', SEQ)) end
  if old[6] and old[6] ~= session then redis.call('SREM', P_SESSION .. old[6], ref) end
  local expires = int(NOW + ttl)
  redis.call('HSET', key, 'seq', seq, 'in', pin, 'out', pout, 'cached', pcached,
    'concurrency', ARGV[i + 5], 'tpm', ARGV[i + 6], 'ttl_ms', int(ttl), 'expires_ms', expires,
    'session', session, 'body', body)
  redis.call('ZADD', INDEX, seq, ref)
  redis.call('ZADD', EXPIRY, expires, ref)
  redis.call('SADD', P_SESSION .. session, ref)
  -- The stream's offer JSON is the body with its seq spliced in before the closing brace.
  local offer = string.sub(body, 1, -2) .. ',"seq":' .. seq .. '}'
  if not live then
    emit('new', ref, {'offer', offer, 'in_flight', int(live_in_flight(ref)),
      'tokens', int(tokens_in_window(ref))})
  elseif repriced or old[5] ~= body then
    emit('changed', ref, {'offer', offer})
  end
  seqs[#seqs + 1] = seq
end
return seqs
