-- Adds native-id aliases for an event already in the log, keeping the first mapping of each.
-- KEYS: 1 id map (current bucket), 2 id map (previous bucket)
-- ARGV: 1 stream id, 2 ttl seconds, 3.. alias fields
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
