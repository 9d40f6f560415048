import { describe, expect, it } from 'vitest';
import { isSyncgateError } from '../../src/core/errors.js';
import { createEventLog, createMemoryStore, type MemoryStore } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { eventLogContract, type ContractTarget } from './eventlog.contract.js';
import { partitionsContract } from './partitions.contract.js';
import { message } from '../fixtures/events.js';

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

describe('memory log write format gate', () => {
  const open = (memoryStore: MemoryStore) => createEventLog({ partitions: 4, log: silentLogger(), memoryStore });

  it('a new log writes format 3', async () => {
    const log = open(createMemoryStore({ partitions: 4 }));
    expect(await log.writeFormat()).toBe(3);
    await log.close();
  });

  it('a log without a stored format writes format 1 until raised; every replica follows; lowering is refused', async () => {
    const memoryStore = createMemoryStore({ partitions: 4, beforeFormatGate: true });
    const a = open(memoryStore);
    const b = open(memoryStore);
    await a.rooms.put({ id: 'r', links: [] });
    await a.append(message('r', 'one'));
    expect(await a.writeFormat()).toBe(1);
    expect(await b.writeFormat()).toBe(1);
    expect(await a.raiseWriteFormat(2)).toBe(2);
    // b learns it when it reads the partition count again (delivery does once a lease period)
    await b.partitionCount();
    expect(await b.writeFormat()).toBe(2);
    await expectCode(b.raiseWriteFormat(1), 'SG_ERR_LOG_FORMAT_LOWERED');
    expect(await a.writeFormat()).toBe(2);
    await a.close();
    await b.close();
  });
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isSyncgateError(err) ? err.code : String(err)).toBe(code);
}
