import { inject } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { eventLogContract, type ContractTarget } from './eventlog.contract.js';
import { partitionsContract } from './partitions.contract.js';

const stores = new Map<string, string>();
const target: ContractTarget = {
  name: 'redis',
  create: async (options = {}) =>
    createEventLog({
      partitions: options.partitions ?? 4,
      log: silentLogger(),
      redis: { url: inject('redisUrl'), prefix: storePrefix(options.store) },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    }),
};

function storePrefix(store: string | undefined): string {
  if (store === undefined) return testPrefix('contract');
  let prefix = stores.get(store);
  if (prefix === undefined) stores.set(store, (prefix = testPrefix('contract')));
  return prefix;
}

eventLogContract(target);
partitionsContract(target);
