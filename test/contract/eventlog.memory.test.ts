import { createEventLog, createMemoryStore, type MemoryStore } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { eventLogContract, type ContractTarget } from './eventlog.contract.js';
import { partitionsContract } from './partitions.contract.js';

/** logs opened with the same `store` share one in-memory store, as replicas share one Redis */
const stores = new Map<string, MemoryStore>();

const target: ContractTarget = {
  name: 'memory',
  create: async (options = {}) => {
    let memoryStore: MemoryStore | undefined;
    if (options.store !== undefined) {
      memoryStore = stores.get(options.store);
      if (!memoryStore) stores.set(options.store, (memoryStore = createMemoryStore({ partitions: options.partitions ?? 4 })));
    }
    return createEventLog({
      partitions: options.partitions ?? 4,
      log: silentLogger(),
      ...(memoryStore ? { memoryStore } : {}),
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    });
  },
};

eventLogContract(target);
partitionsContract(target);
