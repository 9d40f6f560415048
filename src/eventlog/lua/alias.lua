-- Adds native-id aliases for an event already in the log, keeping the first mapping of each.
-- KEYS: per alias field i (N of them) 2i-1 the id-map hash of its current bucket, 2i that of the
--       previous bucket (keys.ts ids: with layout 3 a bucket's map is split over many hashes)
-- ARGV: 1 stream id, 2 ttl seconds, 3.. the N alias fields
local touched = {}
for i = 3, #ARGV do
  local current = KEYS[2 * (i - 2) - 1]
  if redis.call('HEXISTS', KEYS[2 * (i - 2)], ARGV[i]) == 0 then
    redis.call('HSETNX', current, ARGV[i], ARGV[1])
    touched[current] = true
  end
end
for k in pairs(touched) do
  redis.call('EXPIRE', k, ARGV[2])
end
return 1
