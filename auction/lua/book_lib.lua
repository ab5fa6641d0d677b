-- Shared head of every book script (auction/scripts.py puts it in front of each one).
--
-- Calling convention, the same for every book script:
--   KEYS: index, expiry, changes, version, seq, reservations   (one model's book)
--   ARGV: now_ms ('' = Redis TIME), model, stream maxlen, then the key prefixes of the offer
--         hash, session set, in-flight zset, tokens window and tokens amounts; each script's own
--         arguments start at ARGV[9].
-- A per-offer key is a prefix plus the offer's ref. The prefixes carry the model's hash tag
-- {b:MODEL}, so every key a script touches is in the slot of the KEYS it was called with.
local INDEX, EXPIRY, CHANGES, VERSION, SEQ, RESERVATIONS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local MODEL, MAXLEN = ARGV[2], ARGV[3]
local P_OFFER, P_SESSION, P_INFLIGHT, P_WINDOW, P_AMOUNTS = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local TPM_WINDOW_MS = 60000
local BATCH = 500

local function int(x) return string.format('%d', x) end

-- One clock for every server process: Redis's own, unless a test pins it.
local NOW
if ARGV[1] ~= '' then
  NOW = tonumber(ARGV[1])
else
  redis.replicate_commands() -- Redis 6.2 needs it before TIME in a writing script; 7 ignores it
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local NOW_TEXT = int(NOW)

-- Append one change. `n` numbers the model's changes 1, 2, 3... so that a follower that finds a
-- jump knows the stream was trimmed past what it had read, and reloads.
local function emit(kind, ref, extra)
  local n = redis.call('INCR', VERSION)
  local args = {'XADD', CHANGES, 'MAXLEN', '~', MAXLEN, '*',
    'kind', kind, 'ref', ref, 'model', MODEL, 'n', int(n), 'ts', NOW_TEXT}
  for _, v in ipairs(extra or {}) do args[#args + 1] = v end
  redis.call(unpack(args))
end

-- `emit(kind, ref, {'offer', offer})` without building the arguments twice: every re-quote
-- comes this way.
local function emit_offer(kind, ref, offer)
  local n = redis.call('INCR', VERSION)
  redis.call('XADD', CHANGES, 'MAXLEN', '~', MAXLEN, '*',
    'kind', kind, 'ref', ref, 'model', MODEL, 'n', int(n), 'ts', NOW_TEXT, 'offer', offer)
end

-- A reservation's member in the model-wide set: the ref, length-prefixed, then the id.
local function member(ref, rid) return #ref .. ':' .. ref .. rid end
local function split_member(m)
  local colon = string.find(m, ':', 1, true)
  local len = tonumber(string.sub(m, 1, colon - 1))
  return string.sub(m, colon + 1, colon + len), string.sub(m, colon + len + 1)
end

-- Drop an offer's expired reservations (from both sets); returns how many are still live.
local function live_in_flight(ref)
  local key = P_INFLIGHT .. ref
  local dead = redis.call('ZRANGEBYSCORE', key, '-inf', int(NOW))
  for _, rid in ipairs(dead) do
    redis.call('ZREM', key, rid)
    redis.call('ZREM', RESERVATIONS, member(ref, rid))
  end
  return redis.call('ZCARD', key)
end

-- Tokens reserved against an offer in the last minute, after dropping older entries. The
-- amounts hash keeps their running total under the field '' (reservation ids are never empty).
local function tokens_in_window(ref)
  local window, amounts = P_WINDOW .. ref, P_AMOUNTS .. ref
  local cutoff = int(NOW - TPM_WINDOW_MS)
  while true do
    local old = redis.call('ZRANGEBYSCORE', window, '-inf', cutoff, 'LIMIT', 0, BATCH)
    if #old == 0 then break end
    local drop = 0
    for _, v in ipairs(redis.call('HMGET', amounts, unpack(old))) do drop = drop + (tonumber(v) or 0) end
    redis.call('HDEL', amounts, unpack(old))
    redis.call('ZREM', window, unpack(old))
    if redis.call('HLEN', amounts) > 1 then
      redis.call('HINCRBY', amounts, '', int(-drop))
    else
      redis.call('DEL', amounts)
    end
  end
  return tonumber(redis.call('HGET', amounts, '') or '0')
end

-- Set (or, with nil, drop) a reservation's tokens; true when something changed.
local function set_tokens(ref, rid, tokens)
  local amounts = P_AMOUNTS .. ref
  local old = redis.call('HGET', amounts, rid)
  if not old then return false end
  if tokens == nil then
    redis.call('HDEL', amounts, rid)
    redis.call('ZREM', P_WINDOW .. ref, rid)
    redis.call('HINCRBY', amounts, '', int(-tonumber(old)))
    return true
  end
  redis.call('HSET', amounts, rid, int(tokens))
  redis.call('HINCRBY', amounts, '', int(tokens - tonumber(old)))
  return tonumber(old) ~= tokens
end

-- Tell followers an offer's live capacity use.
local function emit_capacity(ref)
  emit('capacity', ref, {'in_flight', int(live_in_flight(ref)), 'tokens', int(tokens_in_window(ref))})
end

-- Take an offer out of the book; false when it was not there.
local function remove_offer(ref, kind)
  local key = P_OFFER .. ref
  local session = redis.call('HGET', key, 'session')
  if not session then return false end
  redis.call('SREM', P_SESSION .. session, ref)
  redis.call('DEL', key)
  redis.call('ZREM', INDEX, ref)
  redis.call('ZREM', EXPIRY, ref)
  emit(kind, ref)
  return true
end

-- ---- script ---------------------------------------------------------------------------------
