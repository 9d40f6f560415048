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
    const leaseOwner = async (p: number) => redis.get(`${prefix}{p:${String(p).padStart(2, '0')}}:lease:out:remote`);

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
    a.proc.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor(async () => (await leaseOwner(0)) === b.owner && (await leaseOwner(1)) === b.owner, { timeoutMs: LEASE_MS * 4 + 5000, what: 'B to take over every lease' });
    const takeover = Date.now() - killedAt;
    await waitFor(async () => (await recorder.all()).length >= 300, { timeoutMs: 20_000, what: 'deliveries by B' });
    writing = false;
    await writer;

    await waitFor(async () => new Set((await recorder.all()).map((d) => d.eventId)).size === appended.length, { timeoutMs: 30_000, what: 'every event delivered' });
    const records = await recorder.all();
    // nothing lost
    expect(new Set(records.map((d) => d.eventId))).toEqual(new Set(appended.map((x) => x.eventId)));
    // per-room order kept
    for (const room of rooms) {
      expect(records.filter((d) => d.room === room).map((d) => d.eventId)).toEqual(appended.filter((x) => x.room === room).map((x) => x.eventId));
    }
    // the remote absorbed at most one in-flight redelivery per room
    expect(await recorder.duplicates()).toBeLessThanOrEqual(rooms.length);
    expect(takeover).toBeLessThan(LEASE_MS * 4 + 5000);
    process.stdout.write(`failover: B held every lease ${takeover} ms after SIGKILL (lease ${LEASE_MS} ms); ${appended.length} events, ${await recorder.duplicates()} duplicate(s) absorbed\n`);
    await log.close();
    await redis.quit();
  });
});
