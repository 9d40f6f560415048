import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { eventLogContract } from './eventlog.contract.js';

eventLogContract({
  name: 'memory',
  create: async (options = {}) =>
    createEventLog({ partitions: options.partitions ?? 4, log: silentLogger(), ...(options.retention ? { retention: options.retention } : {}), ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}) }),
});
