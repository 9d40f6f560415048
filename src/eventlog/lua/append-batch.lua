-- Idempotent append of a batch of events (docs/architecture.md, "Append"), of one partition or, on
-- one Redis (not a cluster), of several: one script call per batch instead of one per partition is
-- what keeps the log close to raw XADD when concurrent producers write to different partitions (a
-- call's fixed cost, ~20 µs of Redis time, was paid for 1.2 events on average; issue 19, point 4).
-- On a cluster a batch holds one key group (keys.ts: with layout 2 the partitions p ≡ g mod 18, whose
-- keys share one hash slot; with layout 1 one partition): atomic there too.
-- KEYS: per partition q of the batch (1-based, P of them) four keys at 4(q-1)+1 …: its feed, id map
--       (current bucket), id map (previous bucket), trim marks (stream key -> last removed id);
--       then per room r of the batch: 4P+2r-1 its timeline, 4P+2r its meta
-- ARGV: 1 room max length (0 = none), 2 feed max length (0 = none), 3 id map ttl seconds, 4 one
--       character per partition of the batch, P of them: '1' sets its id map's (current bucket)
--       expiry if the call writes to it, '0' leaves it (the client sets it once a minute, not in
--       every call: one EXPIRE per partition and call was about one per event),
--       5 the events as one JSON array (one argument, not a dozen per event: building and sending
--       arguments was the client's largest cost), each [q, r, room, idempotency field, [alias fields]]
--       and, for format 1, a sixth element 1; for format 3, a sixth element 3 and a seventh, the
--       received time; then per event i the argument 5+i: format 2, its stored JSON (codec.ts
--       encodeEvent, written as the timeline entry's one field `e`; an argument of its own, not a
--       string inside the batch's JSON, whose quotes would all be escaped and unescaped once more);
--       format 3, the stored JSON after its first element (codec.ts encodeEventTail), written as the
--       one field `f` behind `[` and the received time less the new id's milliseconds (issue 19,
--       point 6: 2 digits instead of 13); format 1 (the log's write format is 1 while replicas of
--       builds that read only it may run), a JSON array of the ten values in codec.ts FIELD_NAMES
--       order, written as fields k … x
-- Returns a flat list {status, id} per event: 1 = appended (stream id), 0 = duplicate (compact id of
-- the first append), -1 = unknown room; then one string, a character per partition: '1' where the
-- id map's expiry was set.

-- Id-map values are stream ids in hex (`ms.seq`): 13 bytes instead of 15 fit
-- Redis' smallest string allocation; see redis-backend.ts compactId().
local function compact(id, dash, ms)
  return string.format('%x.%x', ms, tonumber(string.sub(id, dash + 1)))
end

-- Caps a stream at maxlen, in batches of TRIM_BATCH so the cost is amortised,
-- and records the last removed id in `marks`: Redis 7.0 does not keep it for
-- trims, and readers need it to tell a client that it missed events (`limited`).
local TRIM_BATCH = 100
local function cap(key, maxlen, marks)
  if maxlen <= 0 then return end
  local len = redis.call('XLEN', key)
  if len <= maxlen + TRIM_BATCH then return end
  local removed = redis.call('XRANGE', key, '-', '+', 'COUNT', len - maxlen)
  redis.call('XTRIM', key, 'MAXLEN', maxlen)
  redis.call('HSET', marks, key, removed[#removed][1])
end

local roommax = tonumber(ARGV[1])
local feedmax = tonumber(ARGV[2])
local expiry = ARGV[4]
local parts = #expiry
local events = cjson.decode(ARGV[5])
local out = {}
local wrote = {}
local known = {}
for i = 1, #events do
  local e = events[i]
  local base = 4 * (e[1] - 1)
  local r = e[2]
  local room = e[3]
  local idem = e[4]
  local aliases = e[5]
  local feed_key = KEYS[base + 1]
  local ids_key = KEYS[base + 2]
  local room_key = KEYS[4 * parts + 2 * r - 1]
  local meta_key = KEYS[4 * parts + 2 * r]

  if known[r] == nil then known[r] = redis.call('EXISTS', meta_key) == 1 end
  if not known[r] then
    out[#out + 1] = -1
    out[#out + 1] = ''
  else
    local existing = redis.call('HGET', ids_key, idem) or redis.call('HGET', KEYS[base + 3], idem)
    if existing then
      out[#out + 1] = 0
      out[#out + 1] = existing
    else
      local id = redis.call('XADD', feed_key, '*', 'r', room)
      local dash = string.find(id, '-', 1, true)
      local ms = tonumber(string.sub(id, 1, dash - 1))
      -- The timeline entry takes the feed entry's id: one position names the event everywhere.
      if e[6] == 3 then
        redis.call('XADD', room_key, id, 'f', '[' .. string.format('%d', e[7] - ms) .. ARGV[5 + i])
      elseif e[6] == 1 then
        local v = cjson.decode(ARGV[5 + i])
        redis.call('XADD', room_key, id, 'k', v[1], 'i', v[2], 's', v[3], 'o', v[4], 't', v[5],
          'u', v[6], 'b', v[7], 'c', v[8], 'r', v[9], 'x', v[10])
      else
        redis.call('XADD', room_key, id, 'e', ARGV[5 + i])
      end
      cap(room_key, roommax, KEYS[base + 4])
      local short = compact(id, dash, ms)
      redis.call('HSET', ids_key, idem, short)
      for j = 1, #aliases do
        redis.call('HSETNX', ids_key, aliases[j], short)
      end
      wrote[e[1]] = true
      out[#out + 1] = 1
      out[#out + 1] = id
    end
  end
end
local expired = {}
for q = 1, parts do
  expired[q] = '0'
  if wrote[q] then
    local base = 4 * (q - 1)
    cap(KEYS[base + 1], feedmax, KEYS[base + 4])
    if string.byte(expiry, q) == 49 then
      redis.call('EXPIRE', KEYS[base + 2], ARGV[3])
      expired[q] = '1'
    end
  end
end
out[#out + 1] = table.concat(expired)
return out
