-- Idempotent append of one event (DESIGN §3). All keys share the partition's
-- hash tag, so this is atomic in Redis Cluster too.
-- KEYS: 1 partition feed, 2 room timeline, 3 room meta, 4 id map (current bucket),
--       5 id map (previous bucket), 6 trim marks (stream key -> last removed id)
-- ARGV: 1 room, 2 room max length (0 = none), 3 feed max length (0 = none), 4 id map ttl seconds,
--       5 idempotency field, 6 alias count n, 7..6+n alias fields, then the event's field/value pairs
-- Returns {status, id}: status 1 = appended (stream id), 0 = duplicate (compact id of the first append), -1 = unknown room.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {-1, ''}
end
local existing = redis.call('HGET', KEYS[4], ARGV[5]) or redis.call('HGET', KEYS[5], ARGV[5])
if existing then
  return {0, existing}
end

-- Id-map values are stream ids in base 36 (`ms.seq`): 10 bytes instead of 15
-- fits Redis' smallest string allocation; see redis-backend.ts compactId().
local function compact(id)
  local dash = string.find(id, '-', 1, true)
  local function b36(n)
    local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
    if n == 0 then return '0' end
    local out = ''
    while n > 0 do
      local d = n % 36
      out = string.sub(digits, d + 1, d + 1) .. out
      n = (n - d) / 36
    end
    return out
  end
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
  redis.call('HSET', KEYS[6], key, removed[#removed][1])
end

local id = redis.call('XADD', KEYS[1], '*', 'r', ARGV[1])
-- The timeline entry takes the feed entry's id: one position names the event everywhere.
local n = tonumber(ARGV[6])
redis.call('XADD', KEYS[2], id, unpack(ARGV, 7 + n))
cap(KEYS[1], tonumber(ARGV[3]))
cap(KEYS[2], tonumber(ARGV[2]))
local short = compact(id)
redis.call('HSET', KEYS[4], ARGV[5], short)
for i = 7, 6 + n do
  redis.call('HSETNX', KEYS[4], ARGV[i], short)
end
redis.call('EXPIRE', KEYS[4], ARGV[4])
return {1, id}
