-- Opens a new log: stores the partition count, the write format and the key layout together, only
-- when no count is stored yet (a replica of a build before the format gate may have opened the log
-- meanwhile: then its format, 1, and its layout, 1 (none stored), stay). KEYS: 1 the partition count
-- hash. ARGV: 1 the count, 2 the format, 3 (optional) the key layout.
if redis.call('HEXISTS', KEYS[1], 'partitions') == 0 then
  if ARGV[3] then
    redis.call('HSET', KEYS[1], 'partitions', ARGV[1], 'format', ARGV[2], 'layout', ARGV[3])
  else
    redis.call('HSET', KEYS[1], 'partitions', ARGV[1], 'format', ARGV[2])
  end
end
return 1
