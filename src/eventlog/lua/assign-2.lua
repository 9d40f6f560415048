-- A room's partition (docs/architecture.md, "Partitions"): the stored one, or for a new
-- room its hash modulo the stored partition count, stored for good so the room never moves.
-- KEYS: 1 the partition count hash, 2 the room → partition hash (one hash tag: one slot)
-- ARGV: 1 room, 2 the room's hash (FNV-1a), 3 the count to use when none is stored
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then return tonumber(known) end
local count = tonumber(redis.call('HGET', KEYS[1], 'partitions') or ARGV[3])
local partition = tonumber(ARGV[2]) % count
redis.call('HSET', KEYS[2], ARGV[1], partition)
return partition
