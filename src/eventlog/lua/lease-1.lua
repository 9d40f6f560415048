-- Takes or renews a delivery lease. KEYS: 1 lease. ARGV: 1 owner, 2 ttl ms,
-- 3 (optional) a holder to take the lease from: a dead earlier incarnation of
-- this replica, replaced only if it still holds it (compare and set).
-- Returns 1 when `owner` holds the lease afterwards, 0 when someone else does.
local current = redis.call('GET', KEYS[1])
if not current or (ARGV[3] and ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
