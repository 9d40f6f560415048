-- The fencing token of a lease while `owner` holds it. KEYS: 1 lease, 2 its
-- fencing token. ARGV: 1 owner. Returns the token as text, or false.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
return redis.call('GET', KEYS[2]) or '0'
