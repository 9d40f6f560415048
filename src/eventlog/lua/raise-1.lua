-- Raises the stored partition count, never lowers it; returns the count now stored.
-- KEYS: 1 the partition count hash. ARGV: 1 the count wanted.
local stored = tonumber(redis.call('HGET', KEYS[1], 'partitions') or '0')
local wanted = tonumber(ARGV[1])
if wanted > stored then
  redis.call('HSET', KEYS[1], 'partitions', wanted)
  return wanted
end
return stored
