-- Idempotent append of a batch of events (docs/architecture.md, "Append"), of one partition or, on
-- one Redis (not a cluster), of several: one script call per batch instead of one per partition is
-- what keeps the log close to raw XADD when concurrent producers write to different partitions (a
-- call's fixed cost, ~20 µs of Redis time, was paid for 1.2 events on average; issue 19, point 4).
-- On a cluster a batch holds one key group (keys.ts: with layout 2 and 3 the partitions p ≡ g mod 18,
-- whose keys share one hash slot; with layout 1 one partition): atomic there too.
-- KEYS: per partition q of the batch (1-based, P of them) three keys at 3(q-1)+1 …: its feed, its
--       trim marks (stream key -> last removed id), and with id-map shards (key layout 3) its
--       bucket's ttl bitmap (keys.ts idsTtl: bit s set once shard s has its ttl), else its bucket's
--       one id-map hash; then per room r of the batch: 3P+2r-1 its timeline, 3P+2r its meta; then
--       the id-map hashes the events name (keys.ts ids: with layout 3 a bucket's map is split over
--       many hashes, and the client names the one of each field)
-- ARGV: 1 room max length (0 = none), 2 feed max length (0 = none), 3 id map ttl seconds, 4 P,
--       5 the events as one JSON array (one argument, not a dozen per event: building and sending
--       arguments was the client's largest cost), each [q, r, room, idempotency field, [alias fields],
--       format, the KEYS index of the idempotency field's hash in the current bucket, the same in the
--       previous bucket, [the KEYS index of each alias field's hash in the current bucket], the
--       idempotency field's shard, [each alias field's shard]] (shards: layout 3 only; format 1 or 2);
--       then per event i the argument 5+i: format 2, its stored
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
local parts = tonumber(ARGV[4])
local events = cjson.decode(ARGV[5])
-- layout 3 (id-map shards): the events carry their fields' shards
local events_sharded = events[1] ~= nil and events[1][11] ~= nil
local out = {}
local wrote = {}
local known = {}
-- Layout 3: a shard hash gets its ttl when first written in its bucket, not at every write (one
-- EXPIRE a write cost ~20% of the script's time): the bucket's ttl bitmap, read once a batch,
-- says which shards have it. The bitmap lives no longer than the shards it names (it is made at
-- the bucket's first write, with the same ttl), and a bucket is written only while it is current.
local bitmaps = {}
local expired = {}
local function ttl_once(q, key, shard)
  local bitmap = KEYS[3 * (q - 1) + 3]
  local bits = bitmaps[q]
  if bits == nil then
    bits = redis.call('GET', bitmap) or ''
    bitmaps[q] = bits
  end
  local byte = math.floor(shard / 8) + 1
  if byte <= #bits and bit.band(string.byte(bits, byte), 2 ^ (7 - shard % 8)) ~= 0 then return end
  if expired[key] then return end
  expired[key] = true
  redis.call('EXPIRE', KEYS[key], ARGV[3])
  redis.call('SETBIT', bitmap, shard, 1)
  if bits == '' and not expired[bitmap] then
    expired[bitmap] = true
    redis.call('EXPIRE', bitmap, ARGV[3])
  end
end
for i = 1, #events do
  local e = events[i]
  local base = 3 * (e[1] - 1)
  local r = e[2]
  local room = e[3]
  local idem = e[4]
  local aliases = e[5]
  local feed_key = KEYS[base + 1]
  local room_key = KEYS[3 * parts + 2 * r - 1]
  local meta_key = KEYS[3 * parts + 2 * r]

  if known[r] == nil then known[r] = redis.call('EXISTS', meta_key) == 1 end
  if not known[r] then
    out[#out + 1] = -1
    out[#out + 1] = ''
  else
    local existing = redis.call('HGET', KEYS[e[7]], idem) or redis.call('HGET', KEYS[e[8]], idem)
    if existing then
      out[#out + 1] = 0
      out[#out + 1] = existing
    else
      local id = redis.call('XADD', feed_key, '*', 'r', room)
      -- The timeline entry takes the feed entry's id: one position names the event everywhere.
      if e[6] == 1 then
        local v = cjson.decode(ARGV[5 + i])
        redis.call('XADD', room_key, id, 'k', v[1], 'i', v[2], 's', v[3], 'o', v[4], 't', v[5],
          'u', v[6], 'b', v[7], 'c', v[8], 'r', v[9], 'x', v[10])
      else
        redis.call('XADD', room_key, id, 'e', ARGV[5 + i])
      end
      cap(room_key, roommax, KEYS[base + 2])
      local short = compact(id)
      redis.call('HSET', KEYS[e[7]], idem, short)
      local at = e[9]
      for j = 1, #aliases do
        redis.call('HSETNX', KEYS[at[j]], aliases[j], short)
      end
      local shards = e[11]
      if shards then
        ttl_once(e[1], e[7], e[10])
        for j = 1, #aliases do ttl_once(e[1], at[j], shards[j]) end
      end
      wrote[e[1]] = true
      out[#out + 1] = 1
      out[#out + 1] = id
    end
  end
end
for q = 1, parts do
  if wrote[q] then
    local base = 3 * (q - 1)
    cap(KEYS[base + 1], feedmax, KEYS[base + 2])
    -- one id-map hash a bucket (layouts 1 and 2): its ttl at each batch, as before
    if not events_sharded then redis.call('EXPIRE', KEYS[base + 3], ARGV[3]) end
  end
end
return out
