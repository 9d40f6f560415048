-- Fenced XACK: acknowledges only while `owner` holds the lease, so a worker
-- that lost its lease (paused, partitioned) cannot ack what another now owns.
-- KEYS: 1 lease, 2 feed. ARGV: 1 owner, 2 group, 3.. ids. Returns -1 when the lease is not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
return redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 3))
