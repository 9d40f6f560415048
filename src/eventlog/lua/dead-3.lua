-- Moves a feed entry to the dead-letter stream and acknowledges it, fenced by the lease.
-- KEYS: 1 lease, 2 feed, 3 dead-letter stream.
-- ARGV: 1 owner, 2 group, 3 feed id, 4 room, 5 event id, 6 reason, 7 attempts, 8 time ms.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
redis.call('XADD', KEYS[3], '*', 'g', ARGV[2], 'f', ARGV[3], 'r', ARGV[4], 'e', ARGV[5], 'why', ARGV[6], 'n', ARGV[7], 't', ARGV[8])
return redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
