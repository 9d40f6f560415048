-- Raises a stored count in the log's meta hash, never lowers it; returns the value now stored.
-- KEYS: 1 the partition count hash. ARGV: 1 the value wanted, 2 the field (default `partitions`;
-- `format`: the write format, absent = 1 (a log from before the format gate)).
local field = ARGV[2] or 'partitions'
local absent = field == 'format' and '1' or '0'
local stored = tonumber(redis.call('HGET', KEYS[1], field) or absent)
local wanted = tonumber(ARGV[1])
if wanted > stored then
  redis.call('HSET', KEYS[1], field, wanted)
  return wanted
end
return stored
