/**
 * The replicas list of the console's Overview: drift is a configuration hash
 * that differs from most replicas'; the hash leaves secrets and the replica's
 * own id out; replicas not seen lately are not listed.
 */
import { describe, expect, it } from 'vitest';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { announceReplica, configHash, listReplicas } from '../../../src/runtime/replicas.js';

describe('replicas', () => {
  it('hashes the configuration without secrets or the replica id', () => {
    const base = { partitions: 4, replicaId: 'a', http: { port: 8080, adminToken: 'one-secret-0123456789' }, redis: { url: 'redis://:pw@x:6379' } };
    expect(configHash(base)).toMatch(/^[0-9a-f]{12}$/);
    expect(configHash({ ...base, replicaId: 'b', http: { port: 8080, adminToken: 'another-secret-0123' }, redis: { url: 'redis://:other@y:6379' } })).toBe(configHash(base));
    expect(configHash({ ...base, partitions: 8 })).not.toBe(configHash(base));
  });

  it('lists the replicas seen lately and flags the one whose configuration differs', async () => {
    const log = createEventLog({ partitions: 1, log: silentLogger() });
    const now = 1_000_000;
    const rec = (replicaId: string, configHash: string, seenAt: number) => ({ replicaId, version: '0.1.0', configHash, startedAt: 1, seenAt });
    await announceReplica(log.state, rec('r1', 'aaaaaaaaaaaa', now));
    await announceReplica(log.state, rec('r2', 'aaaaaaaaaaaa', now - 1000));
    await announceReplica(log.state, rec('r3', 'bbbbbbbbbbbb', now - 2000));
    await announceReplica(log.state, rec('gone', 'cccccccccccc', now - 60_000));
    const list = await listReplicas(log.state, 45_000, now);
    expect(list.map((r) => [r.replicaId, r.drift])).toEqual([
      ['r1', false],
      ['r2', false],
      ['r3', true],
    ]);
    await log.close();
  });
});
