-- Post or re-quote offers of one model for a session.
-- ARGV[9] session, then per offer 8 values: ref, body (the offer's JSON object without seq),
-- input, output and cached input prices (micro-USD), concurrency, tokens per minute ('' = no
-- limit), ttl_ms. A new offer, or one whose prices changed, takes the next seq (it loses its time
-- priority); otherwise it keeps its seq. Returns the seqs in order.
--
-- Bidders re-quote the same offers many times a second, so a re-quote writes only what changed:
-- the index keeps a seq that did not change, the session set an owner that did not change, and
-- the expiry index keeps an earlier expiry (its scores may be early, never late: the sweep,
-- expire.lua, re-scores an offer it finds still live).
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
  if old[6] ~= session then
    if old[6] then redis.call('SREM', P_SESSION .. old[6], ref) end
    redis.call('SADD', P_SESSION .. session, ref)
  end
  local expires = int(NOW + ttl)
  if old[5] == body then
    -- The body names every other field: only the seq, expiry and owner can differ.
    redis.call('HSET', key, 'seq', seq, 'expires_ms', expires, 'session', session)
  else
    redis.call('HSET', key, 'seq', seq, 'in', pin, 'out', pout, 'cached', pcached,
      'concurrency', ARGV[i + 5], 'tpm', ARGV[i + 6], 'ttl_ms', int(ttl), 'expires_ms', expires,
      'session', session, 'body', body)
  end
  if repriced then redis.call('ZADD', INDEX, seq, ref) end
  if not live or NOW + ttl < tonumber(old[7]) then redis.call('ZADD', EXPIRY, expires, ref) end
  -- The stream's offer JSON is the body with its seq spliced in before the closing brace.
  if not live then
    emit('new', ref, {'offer', string.sub(body, 1, -2) .. ',"seq":' .. seq .. '}',
      'in_flight', int(live_in_flight(ref)), 'tokens', int(tokens_in_window(ref))})
  elseif repriced or old[5] ~= body then
    emit_offer('changed', ref, string.sub(body, 1, -2) .. ',"seq":' .. seq .. '}')
  end
  seqs[#seqs + 1] = seq
end
return seqs
