import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { isSyncgateError } from '../../src/core/errors.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { startOwnedRedis, testPrefix } from '../harness/redis.js';
import { nodeCommand } from '../harness/redis-cluster.js';
import { partitionOfRoom } from '../harness/room-partition.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { eventLogContract } from './eventlog.contract.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';

// one 6-node cluster (3 masters, 3 replicas) for the whole file
const { started } = useRedisCluster();

eventLogContract({
  name: 'redis cluster',
  create: async (options = {}) =>
    createEventLog({
      // 16 partitions: their hash slots spread over all three masters
      partitions: options.partitions ?? 16,
      log: silentLogger(),
      redis: { cluster: { nodes: started().nodes }, prefix: testPrefix('contract-cluster') },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    }),
});

describe('EventLog on a Redis Cluster', () => {
  it('stores each partition on the master owning its slot: the partitions spread over all three masters', async () => {
    const prefix = testPrefix('cluster-spread');
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix } });
    try {
      const rooms = Array.from({ length: 32 }, (_, i) => `spread-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      for (const room of rooms) await log.append(message(room, `hello ${room}`));
      const read = await log.read(undefined, { rooms: 'all', limit: 100 });
      expect(read.events).toHaveLength(32);
      // every master of the cluster holds keys of this prefix; no replica answers for them
      const perMaster: number[] = [];
      for (const node of started().nodes) {
        const port = Number(node.slice(node.lastIndexOf(':') + 1));
        const role = String(await nodeCommand(port, 'INFO', 'replication'));
        if (!/^role:master/m.test(role)) continue;
        const [, keys] = (await nodeCommand(port, 'SCAN', '0', 'MATCH', `${prefix}*`, 'COUNT', '100000')) as [string, string[]];
        perMaster.push(keys.length);
      }
      expect(perMaster).toHaveLength(3);
      for (const n of perMaster) expect(n).toBeGreaterThan(0);
    } finally {
      await log.close();
    }
  });

  it('with redis.waitReplicas 1 acknowledges an append only once the replica of the owning master has it; a stalled replica fails the append', async () => {
    const prefix = testPrefix('cluster-wait');
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix, waitReplicas: 1, waitTimeoutMs: 10_000 } });
    // every replica of the cluster, read-only connections: what each holds the moment an append is acknowledged
    const replicas: Redis[] = [];
    const replicaPorts: number[] = [];
    try {
      for (const node of started().nodes) {
        const port = Number(node.slice(node.lastIndexOf(':') + 1));
        if (!/^role:slave/m.test(String(await nodeCommand(port, 'INFO', 'replication')))) continue;
        const r = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
        r.on('error', () => undefined);
        await r.call('READONLY');
        replicas.push(r);
        replicaPorts.push(port);
      }
      expect(replicas).toHaveLength(3);
      const rooms = Array.from({ length: 12 }, (_, i) => `w-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      for (let i = 0; i < 48; i++) {
        const room = rooms[i % rooms.length] ?? 'w-0';
        const result = await log.append(message(room, `m${i}`));
        expect(result.duplicate).toBe(false);
        // the room's timeline stream holds the event on the owning master's replica already (no waiting
        // here); the other replicas answer MOVED for that slot
        const key = keySpace(prefix, LATEST_KEY_LAYOUT).room(await partitionOfRoom(log, room), room);
        const lengths = await Promise.all(replicas.map((r) => r.xlen(key).catch(() => -1)));
        expect(Math.max(...lengths)).toBe(Math.floor(i / rooms.length) + 1);
      }
      // a stalled replica (SIGSTOP): WAIT times out, the append is reported failed upstream; once the
      // replica is back the sender's retry with the same key is acknowledged, with the same event, once
      const room = 'w-0';
      const key = keySpace(prefix, LATEST_KEY_LAYOUT).room(await partitionOfRoom(log, room), room);
      const probes = await Promise.all(replicas.map((r) => r.xlen(key).then(() => true, () => false)));
      const stalledPort = replicaPorts[probes.indexOf(true)];
      const stalled = started().servers.find((s) => s.port === stalledPort);
      expect(stalled).toBeDefined();
      const slow = createEventLog({ partitions: 16, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix, waitReplicas: 1, waitTimeoutMs: 300 } });
      const draft = message(room, 'while the replica stalls');
      let caught: unknown;
      stalled?.pause();
      try {
        await slow.append(draft);
      } catch (err) {
        caught = err;
      } finally {
        stalled?.resume();
      }
      try {
        expect(isSyncgateError(caught) ? caught.code : String(caught)).toBe('SG_ERR_LOG_NOT_REPLICATED');
        const retried = await log.append(draft);
        expect(retried.duplicate).toBe(true);
        const read = await log.read(undefined, { rooms: new Set([room]), limit: 100 });
        expect(read.events.filter((e) => e.eventId === retried.eventId)).toHaveLength(1);
      } finally {
        await slow.close();
      }
    } finally {
      for (const r of replicas) r.disconnect();
      await log.close();
    }
  });

  it('with redis.waitReplicas 1 and no replica to confirm, an append fails with SG_ERR_LOG_NOT_REPLICATED, and succeeds without waitReplicas', async () => {
    const lone = await startOwnedRedis({ durable: false });
    const prefix = testPrefix('wait-lone');
    const waiting = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: lone.url, prefix, waitReplicas: 1, waitTimeoutMs: 200 } });
    const plain = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: lone.url, prefix } });
    try {
      await plain.rooms.put({ id: 'lone', links: [] });
      const draft = message('lone', 'needs a replica');
      let caught: unknown;
      try {
        await waiting.append(draft);
      } catch (err) {
        caught = err;
      }
      expect(isSyncgateError(caught) ? caught.code : String(caught)).toBe('SG_ERR_LOG_NOT_REPLICATED');
      // the sender's retry with the same key is safe: the event is in the log once
      const retried = await plain.append(draft);
      expect(retried.duplicate).toBe(true);
      const read = await plain.read(undefined, { rooms: 'all', limit: 10 });
      expect(read.events.map((e) => e.eventId)).toEqual([retried.eventId]);
    } finally {
      await Promise.all([waiting.close(), plain.close()]);
      await lone.stop();
    }
  });
});
