import { inject } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { eventLogContract } from './eventlog.contract.js';

eventLogContract({
  name: 'redis',
  create: async (options = {}) =>
    createEventLog({
      partitions: options.partitions ?? 4,
      log: silentLogger(),
      redis: { url: inject('redisUrl'), prefix: testPrefix('contract') },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    }),
});
