-- Takes or renews a delivery lease. KEYS: 1 lease, 2 its fencing token.
-- ARGV: 1 owner, 2 ttl ms, 3 (optional) a holder to take the lease from: a
-- dead earlier incarnation of this replica, replaced only if it still holds
-- it (compare and set).
-- Each time the lease is taken (not renewed) its fencing token grows: the
-- larger of the last token + 1 and the server's time in ms, so a token key
-- lost with the data does not start over below the tokens fenced state
-- stores remember (keys.ts: leaseFence).
-- Returns 1 when `owner` holds the lease afterwards, 0 when someone else does.
local current = redis.call('GET', KEYS[1])
if not current or (ARGV[3] and ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  local token = last + 1
  if ms > token then token = ms end
  redis.call('SET', KEYS[2], string.format('%.0f', token))
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
