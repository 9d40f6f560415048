-- Idempotent append of a batch of events of one partition (DESIGN §3). All keys
-- share the partition's hash tag, so this is atomic in Redis Cluster too.
-- The batch is the appends that arrived together; one script call instead of
-- one per event is what keeps the log close to raw XADD under load.
-- KEYS: 1 partition feed, 2 id map (current bucket), 3 id map (previous bucket), 4 trim marks
--       (stream key -> last removed id), then per event i: 4+2i-1 its room timeline, 4+2i its room meta
-- ARGV: 1 room max length (0 = none), 2 feed max length (0 = none), 3 id map ttl seconds, 4 event count n,
--       then per event: room, idempotency field, alias count a, a alias fields, then the 10 field values
--       in codec.ts FIELD_NAMES order (the names are written here, not sent with every event)
-- Returns a flat list {status, id} per event: 1 = appended (stream id), 0 = duplicate (compact id of
-- the first append), -1 = unknown room.

-- Id-map values are stream ids in base 36 (`ms.seq`): 10 bytes instead of 15
-- fits Redis' smallest string allocation; see redis-backend.ts compactId().
local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'
local function b36(n)
  if n == 0 then return '0' end
  local out = ''
  while n > 0 do
    local d = n % 36
    out = string.sub(DIGITS, d + 1, d + 1) .. out
    n = (n - d) / 36
  end
  return out
end
local function compact(id)
  local dash = string.find(id, '-', 1, true)
  return b36(tonumber(string.sub(id, 1, dash - 1))) .. '.' .. b36(tonumber(string.sub(id, dash + 1)))
end

-- Caps a stream at maxlen, in batches of TRIM_BATCH so the cost is amortised,
-- and records the last removed id: Redis 7.0 does not keep it for trims, and
-- readers need it to tell a client that it missed events (`limited`).
local TRIM_BATCH = 100
local function cap(key, maxlen)
  if maxlen <= 0 then return end
  local len = redis.call('XLEN', key)
  if len <= maxlen + TRIM_BATCH then return end
  local removed = redis.call('XRANGE', key, '-', '+', 'COUNT', len - maxlen)
  redis.call('XTRIM', key, 'MAXLEN', maxlen)
  redis.call('HSET', KEYS[4], key, removed[#removed][1])
end

local roommax = tonumber(ARGV[1])
local feedmax = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local out = {}
local a = 5
local wrote = false
for i = 1, n do
  local room = ARGV[a]
  local idem = ARGV[a + 1]
  local aliases = tonumber(ARGV[a + 2])
  local first_alias = a + 3
  local f = first_alias + aliases
  a = f + 10
  local room_key = KEYS[4 + 2 * i - 1]
  local meta_key = KEYS[4 + 2 * i]

  if redis.call('EXISTS', meta_key) == 0 then
    out[#out + 1] = -1
    out[#out + 1] = ''
  else
    local existing = redis.call('HGET', KEYS[2], idem) or redis.call('HGET', KEYS[3], idem)
    if existing then
      out[#out + 1] = 0
      out[#out + 1] = existing
    else
      local id = redis.call('XADD', KEYS[1], '*', 'r', room)
      -- The timeline entry takes the feed entry's id: one position names the event everywhere.
      redis.call('XADD', room_key, id, 'k', ARGV[f], 'i', ARGV[f + 1], 's', ARGV[f + 2], 'o', ARGV[f + 3], 't', ARGV[f + 4],
        'u', ARGV[f + 5], 'b', ARGV[f + 6], 'c', ARGV[f + 7], 'r', ARGV[f + 8], 'x', ARGV[f + 9])
      cap(room_key, roommax)
      local short = compact(id)
      redis.call('HSET', KEYS[2], idem, short)
      for j = first_alias, first_alias + aliases - 1 do
        redis.call('HSETNX', KEYS[2], ARGV[j], short)
      end
      wrote = true
      out[#out + 1] = 1
      out[#out + 1] = id
    end
  end
end
if wrote then
  cap(KEYS[1], feedmax)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return out
