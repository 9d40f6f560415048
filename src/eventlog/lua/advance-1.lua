-- Monotonic set: store ARGV[2] under field ARGV[1] only when it sorts after the stored value.
-- KEYS: 1 the hash. Returns the value stored afterwards.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (not current) or ARGV[2] > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return current
