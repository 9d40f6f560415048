-- A room's partition (docs/architecture.md, "Partitions"): the stored one, or for a new room
-- the partition the caller chose (balanced placement, room-placement.ts) when it is one of the
-- stored count's, else its hash modulo the stored partition count; stored for good so the room
-- never moves, and counted in the rooms per partition.
-- KEYS: 1 the meta hash, 2 the room → partition hash, 3 rooms per partition (one hash tag: one slot)
-- ARGV: 1 room, 2 the room's hash (FNV-1a), 3 the count to use when none is stored,
--       4 (optional) the chosen partition, -1 for none
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then return tonumber(known) end
local count = tonumber(redis.call('HGET', KEYS[1], 'partitions') or ARGV[3])
local chosen = tonumber(ARGV[4] or '-1')
local partition
if chosen >= 0 and chosen < count then partition = chosen else partition = tonumber(ARGV[2]) % count end
redis.call('HSET', KEYS[2], ARGV[1], partition)
redis.call('HINCRBY', KEYS[3], partition, 1)
return partition
