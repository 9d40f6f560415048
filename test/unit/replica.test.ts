// A replica's lease identity: a restarted replica takes back what its dead earlier incarnation held.
import { describe, expect, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { replicaIdentity } from '../../src/runtime/replica.js';

describe('replica identity', () => {
  const alive = new Set([4242]);
  const isAlive = (pid: number) => alive.has(pid);

  it('recognises a dead earlier incarnation of the same replica, and nothing else', () => {
    const me = replicaIdentity('syncgate-7d9f-abcde', 1, isAlive);
    expect(me.owner).toMatch(/^syncgate-7d9f-abcde#1#[0-9a-f]{8}$/);
    // the restarted container has the same pid number (1): the old process is gone
    expect(me.reclaim('syncgate-7d9f-abcde#1#0badf00d')).toBe(true);
    // same replica, a pid no process has any more
    expect(me.reclaim('syncgate-7d9f-abcde#777#0badf00d')).toBe(true);
    // same replica id, a live process: not ours to take
    expect(me.reclaim('syncgate-7d9f-abcde#4242#0badf00d')).toBe(false);
    // another replica: its lease is waited out
    expect(me.reclaim('syncgate-7d9f-fghij#1#0badf00d')).toBe(false);
    expect(me.reclaim(me.owner)).toBe(false);
    expect(me.reclaim('vm:1234:0badf00d')).toBe(false);
  });

  it('a restarted replica takes its lease at once; another replica still waits for it to expire', async () => {
    const log = createEventLog({ partitions: 1, log: silentLogger() });
    const ttl = 600_000; // far longer than the test: only a reclaim can take it
    const before = replicaIdentity('replica-a', 1, isAlive);
    expect(await log.delivery.acquireLease(0, 'conn:x', before.owner, ttl)).toBe(true);
    // kill -9: nothing released. The restart, same replica id:
    const after = replicaIdentity('replica-a', 1, isAlive);
    const other = replicaIdentity('replica-b', 2, isAlive);
    expect(await log.delivery.acquireLease(0, 'conn:x', other.owner, ttl, (h) => other.reclaim(h))).toBe(false);
    expect(await log.delivery.acquireLease(0, 'conn:x', after.owner, ttl, (h) => after.reclaim(h))).toBe(true);
    // and it holds it now: the old owner's acknowledgements are fenced off
    expect(await log.delivery.acquireLease(0, 'conn:x', before.owner, ttl)).toBe(false);
    await log.close();
  });
});
