-- Idempotent append of a batch of events of one partition (docs/architecture.md, "Append"). All keys
-- share the partition's hash tag, so this is atomic in Redis Cluster too.
-- The batch is the appends that arrived together; one script call instead of
-- one per event is what keeps the log close to raw XADD under load.
-- KEYS: 1 partition feed, 2 id map (current bucket), 3 id map (previous bucket), 4 trim marks
--       (stream key -> last removed id), then per room r of the batch: 4+2r-1 its timeline, 4+2r its meta
-- ARGV: 1 room max length (0 = none), 2 feed max length (0 = none), 3 id map ttl seconds,
--       4 the events as one JSON array (one argument, not a dozen per event: building and sending
--       arguments was the client's largest cost), each [r, room, idempotency field, [alias fields]]
--       and, for format 1, a fifth element 1; then per event i the argument 4+i: format 2, its stored
--       JSON (codec.ts encodeEvent, written as the timeline entry's one field `e`; an argument of its
--       own, not a string inside the batch's JSON, whose quotes would all be escaped and unescaped
--       once more); format 1 (the log's write format is 1 while replicas of builds that read only it
--       may run), a JSON array of the ten values in codec.ts FIELD_NAMES order, written as fields k … x
-- Returns a flat list {status, id} per event: 1 = appended (stream id), 0 = duplicate (compact id of
-- the first append), -1 = unknown room.

-- Id-map values are stream ids in hex (`ms.seq`): 13 bytes instead of 15 fit
-- Redis' smallest string allocation; see redis-backend.ts compactId().
local function compact(id)
  local dash = string.find(id, '-', 1, true)
  return string.format('%x.%x', tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1)))
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
local events = cjson.decode(ARGV[4])
local out = {}
local wrote = false
local known = {}
for i = 1, #events do
  local e = events[i]
  local r = e[1]
  local room = e[2]
  local idem = e[3]
  local aliases = e[4]
  local room_key = KEYS[4 + 2 * r - 1]
  local meta_key = KEYS[4 + 2 * r]

  if known[r] == nil then known[r] = redis.call('EXISTS', meta_key) == 1 end
  if not known[r] then
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
      if e[5] == 1 then
        local v = cjson.decode(ARGV[4 + i])
        redis.call('XADD', room_key, id, 'k', v[1], 'i', v[2], 's', v[3], 'o', v[4], 't', v[5],
          'u', v[6], 'b', v[7], 'c', v[8], 'r', v[9], 'x', v[10])
      else
        redis.call('XADD', room_key, id, 'e', ARGV[4 + i])
      end
      cap(room_key, roommax)
      local short = compact(id)
      redis.call('HSET', KEYS[2], idem, short)
      for j = 1, #aliases do
        redis.call('HSETNX', KEYS[2], aliases[j], short)
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
