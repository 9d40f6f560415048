-- Removes a replayed dead letter once delivered, fenced by the lease.
-- KEYS: 1 lease, 2 replay stream. ARGV: 1 owner, 2 replay entry id.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
return redis.call('XDEL', KEYS[2], ARGV[2])
