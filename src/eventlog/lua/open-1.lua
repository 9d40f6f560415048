-- Opens a new log: stores the partition count and the write format together, only when no count
-- is stored yet (a replica of a build before the format gate may have opened the log meanwhile:
-- then its format, 1, stays). KEYS: 1 the partition count hash. ARGV: 1 the count, 2 the format.
if redis.call('HEXISTS', KEYS[1], 'partitions') == 0 then
  redis.call('HSET', KEYS[1], 'partitions', ARGV[1], 'format', ARGV[2])
end
return 1
