/**
 * Two gateway processes against one Redis: the lease holder is killed with
 * SIGKILL mid-delivery; the other takes over within the lease time, loses
 * nothing, keeps per-room order, and the adapter sees a duplicate only for an
 * event that was in flight.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { killOnExit, terminate, waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { redisRecorder } from '../harness/test-adapter.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';

const PARTITIONS = 2;
const LEASE_MS = 1500;
const child = fileURLToPath(new URL('../harness/delivery-child.ts', import.meta.url));
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const c of children) await terminate(c, 3000);
});

function startChild(prefix: string): Promise<{ proc: ChildProcess; owner: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', child], {
    env: { ...process.env, REDIS_URL: inject('redisUrl'), SG_PREFIX: prefix, SG_PARTITIONS: String(PARTITIONS), SG_LEASE_MS: String(LEASE_MS), SG_SLOW_MS: '5' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  killOnExit(proc);
  children.push(proc);
  return new Promise((resolve, reject) => {
    let out = '';
    proc.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /ready (\S+)/.exec(out);
      if (m?.[1]) resolve({ proc, owner: m[1] });
    });
    proc.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
  });
}

describe('delivery failover between two processes', () => {
  it('moves the leases to the survivor without loss, out-of-order delivery or more than in-flight duplicates', async () => {
    const prefix = testPrefix('failover');
    const redis = new Redis(inject('redisUrl'));
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    const rooms = ['alpha', 'beta', 'gamma', 'delta'];
    for (const id of rooms) await log.rooms.put({ id, links: [{ endpoint: 'remote', target: `t-${id}` }] });
    const leaseOwner = async (p: number) => redis.get(keySpace(prefix, LATEST_KEY_LAYOUT).lease(p, 'out:remote'));

    const a = await startChild(prefix);
    await waitFor(async () => (await leaseOwner(0)) === a.owner && (await leaseOwner(1)) === a.owner, { timeoutMs: 15_000, what: 'A to hold every lease' });
    const b = await startChild(prefix);

    const appended: Array<{ room: string; eventId: string }> = [];
    const recorder = redisRecorder(redis, prefix);
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing && i < 2000; i++) {
        const room = rooms[i % rooms.length] ?? 'alpha';
        appended.push({ room, eventId: (await log.append(message(room, `m${i}`))).eventId });
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    // kill A while it is delivering
    await waitFor(async () => (await recorder.all()).length >= 100, { timeoutMs: 20_000, what: 'deliveries under way' });
    // B is frozen for the moment it takes to count what A had read and not acknowledged:
    // only those entries can reach the remote side twice.
    b.proc.kill('SIGSTOP');
    const aExited = new Promise<void>((resolve) => a.proc.once('exit', () => resolve()));
    a.proc.kill('SIGKILL');
    await aExited;
    let unacked = 0;
    for (let p = 0; p < PARTITIONS; p++) {
      const feed = keySpace(prefix, LATEST_KEY_LAYOUT).feed(p);
      unacked += ((await redis.call('XPENDING', feed, 'out:remote', '-', '+', 100_000, a.owner)) as unknown[]).length;
    }
    b.proc.kill('SIGCONT');
    const killedAt = Date.now();
    await waitFor(async () => (await leaseOwner(0)) === b.owner && (await leaseOwner(1)) === b.owner, { timeoutMs: LEASE_MS * 4 + 5000, what: 'B to take over every lease' });
    const takeover = Date.now() - killedAt;
    await waitFor(async () => (await recorder.all()).length >= 300, { timeoutMs: 20_000, what: 'deliveries by B' });
    writing = false;
    await writer;

    try {
      await waitFor(async () => new Set((await recorder.all()).map((d) => d.eventId)).size === appended.length, { timeoutMs: 120_000, what: 'every event delivered' });
    } catch (err) {
      // What was not delivered, and where the consumer group stands, for the failure report.
      const got = new Set((await recorder.all()).map((d) => d.eventId));
      const missing = appended.filter((x) => !got.has(x.eventId));
      const dump: unknown[] = [];
      for (let p = 0; p < PARTITIONS; p++) {
        const feed = keySpace(prefix, LATEST_KEY_LAYOUT).feed(p);
        dump.push({ p, lease: await leaseOwner(p), groups: await redis.call('XINFO', 'GROUPS', feed), pending: await redis.call('XPENDING', feed, 'out:remote', '-', '+', 20), consumers: await redis.call('XINFO', 'CONSUMERS', feed, 'out:remote') });
      }
      process.stdout.write(`not delivered: missing=${JSON.stringify(missing.slice(0, 20))} n=${missing.length} a=${a.owner} b=${b.owner} ${JSON.stringify(dump)}\n`);
      throw err;
    }
    const records = await recorder.all();
    // nothing lost
    expect(new Set(records.map((d) => d.eventId))).toEqual(new Set(appended.map((x) => x.eventId)));
    // per-room order kept
    for (const room of rooms) {
      expect(records.filter((d) => d.room === room).map((d) => d.eventId)).toEqual(appended.filter((x) => x.room === room).map((x) => x.eventId));
    }
    // the remote absorbed redeliveries only of what A had not acknowledged when it died (acks are
    // batched and do not hold a room back, so that can be more than one entry per room)
    expect(await recorder.duplicates()).toBeLessThanOrEqual(unacked);
    expect(takeover).toBeLessThan(LEASE_MS * 4 + 5000);
    process.stdout.write(`failover: B held every lease ${takeover} ms after SIGKILL (lease ${LEASE_MS} ms); ${appended.length} events, ${await recorder.duplicates()} duplicate(s) absorbed of ${unacked} unacknowledged\n`);
    await log.close();
    await redis.quit();
  }, 240_000);
});
