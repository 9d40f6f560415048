-- Takes or renews a delivery lease. KEYS: 1 lease. ARGV: 1 owner, 2 ttl ms.
-- Returns 1 when `owner` holds the lease afterwards, 0 when someone else does.
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
