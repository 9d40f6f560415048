/**
 * One device must never freeze the gateway. A tail (long-poll /v1/sync, the
 * live stream) from a valid but older cursor used to spin forever when the
 * partition's shared live reader had started later than that cursor: the
 * gateway stopped answering /healthz. Run as the operator runs it — a real
 * `syncgate serve` process — so a frozen event loop shows as a health probe
 * that never answers instead of hanging the test runner.
 */
import type { ChildProcess } from 'node:child_process';
import { describe, expect, inject, it } from 'vitest';
import { partitionOf } from '../../src/core/position.js';
import { getFreePort, waitFor } from '../harness/free-port.js';
import { cliRunner } from '../harness/cli.js';
import { testPrefix } from '../harness/redis.js';

const ADMIN = 'freeze-admin-token-0123456789abcdef';
const PARTITIONS = 16;
const syncgate = cliRunner();

/** Room ids of distinct partitions: `n` rooms, each in its own partition. */
function roomsInDistinctPartitions(n: number, tag: string): string[] {
  const seen = new Set<number>();
  const rooms: string[] = [];
  for (let i = 0; rooms.length < n; i++) {
    const room = `${tag}${i}`;
    const p = partitionOf(room, PARTITIONS);
    if (!seen.has(p)) {
      seen.add(p);
      rooms.push(room);
    }
  }
  return rooms;
}

/** Another room in the same partition as `room`. */
function roomBeside(room: string, tag: string): string {
  const p = partitionOf(room, PARTITIONS);
  for (let i = 0; ; i++) if (partitionOf(`${tag}${i}`, PARTITIONS) === p && `${tag}${i}` !== room) return `${tag}${i}`;
}

async function startServe(env: Record<string, string>): Promise<{ url: string; proc: ChildProcess; out: { stdout: string; stderr: string } }> {
  const port = await getFreePort();
  const { proc, out } = syncgate(['serve'], { SYNCGATE_HTTP_PORT: String(port), SYNCGATE_ADMIN_TOKEN: ADMIN, SYNCGATE_PARTITIONS: String(PARTITIONS), ...env });
  await waitFor(() => out.stdout.includes('syncgate listening'), {
    timeoutMs: 60_000,
    what: 'the gateway to listen',
    failFast: () => (proc.exitCode !== null ? new Error(`exited: ${out.stderr}`) : undefined),
  });
  return { url: `http://127.0.0.1:${port}`, proc, out };
}

async function call<T>(url: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

async function device(url: string, user: string, rooms: readonly string[]): Promise<string> {
  expect((await call(url, 'POST', '/v1/admin/users', ADMIN, { id: user, display: user })).status).toBe(201);
  for (const room of rooms) expect((await call(url, 'PUT', `/v1/admin/users/${user}/rooms/${room}`, ADMIN)).status).toBe(204);
  const d = await call<{ token: string }>(url, 'POST', '/v1/admin/devices', ADMIN, { user, name: `${user} phone` });
  expect(d.status).toBe(201);
  return d.body.token;
}

interface Sync {
  events: Array<{ eventId: string; room: string; content?: { body?: string } }>;
  next: string;
}

/** The health probe an orchestrator runs: it must answer within a second, every time. */
async function expectHealthy(url: string): Promise<void> {
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) }).catch((err: unknown) => {
    throw new Error(`/healthz did not answer within 1 s while tails ran: ${String(err)}`);
  });
  expect(res.status).toBe(200);
}

for (const backend of ['memory', 'redis'] as const) {
  describe(`a tail from an older cursor does not freeze the gateway (${backend} log)`, () => {
    it('for every combination of partitions with and without the device’s rooms, /healthz answers and the tails make progress', async () => {
      const env: Record<string, string> = backend === 'redis' ? { SYNCGATE_REDIS_URL: inject('redisUrl'), SYNCGATE_REDIS_PREFIX: testPrefix('freeze') } : {};
      const { url } = await startServe(env);
      // room0: where v is, and where the live reader starts "now"; room1: u's own room elsewhere;
      // room0b: beside room0 in its partition, for the combination where u has a room there too.
      const [room0 = '', room1 = ''] = roomsInDistinctPartitions(2, 'r');
      const room0b = roomBeside(room0, 'q');
      for (const room of [room0, room1, room0b]) expect((await call(url, 'PUT', `/v1/admin/rooms/${room}`, ADMIN, { links: [] })).status).toBe(200);
      const cases = [
        { name: 'no room of the device in the live partition', rooms: [room1] },
        { name: 'a room of the device in the live partition', rooms: [room1, room0b] },
      ];
      for (const [i, c] of cases.entries()) {
        const u = await device(url, `u${i}`, c.rooms);
        const v = await device(url, `v${i}`, [room0]);
        // c0: u's cursor now, before anything else happens
        const c0 = (await call<Sync>(url, 'GET', '/v1/sync?limit=10', u)).body.next;
        expect((await call(url, 'PUT', `/v1/rooms/${room0}/send/t${i}-v`, v, { kind: 'message', content: { body: 'from v' } })).status).toBe(200);
        // v's long-poll from "now" starts room0's partition's live reader after c0
        const vNow = (await call<Sync>(url, 'GET', '/v1/sync?limit=10', v)).body.next;
        const vPoll = call<Sync>(url, 'GET', `/v1/sync?timeout=20000&since=${vNow}`, v);
        await waitFor(async () => (await fetch(`${url}/metrics`).then((r) => r.text())).match(/^syncgate_http_sync_waiting\S* 1$/m) !== null, {
          timeoutMs: 30_000,
          what: `${c.name}: v's long-poll to wait`,
        });
        // u long-polls from the older cursor: its tail meets a live reader that started later
        const uPoll = call<Sync>(url, 'GET', `/v1/sync?timeout=5000&since=${c0}`, u);
        for (let probe = 0; probe < 3; probe++) await expectHealthy(url);
        // progress: a message in u's room reaches u's long-poll (or the next sync from its cursor)
        const w = await device(url, `w${i}`, c.rooms);
        expect((await call(url, 'PUT', `/v1/rooms/${room1}/send/t${i}-w`, w, { kind: 'message', content: { body: 'for u' } })).status).toBe(200);
        await expectHealthy(url);
        const got = await uPoll;
        expect(got.status).toBe(200);
        const seen = [...got.body.events];
        let next = got.body.next;
        while (!seen.some((e) => e.content?.body === 'for u')) {
          const more = await call<Sync>(url, 'GET', `/v1/sync?timeout=10000&since=${next}`, u);
          expect(more.status).toBe(200);
          if (more.body.events.length === 0) break;
          seen.push(...more.body.events);
          next = more.body.next;
        }
        expect(seen.map((e) => e.content?.body)).toEqual(['for u']);
        // v's long-poll is still served after all this
        expect((await call(url, 'PUT', `/v1/rooms/${room0}/send/t${i}-v2`, v, { kind: 'message', content: { body: 'v again' } })).status).toBe(200);
        const vGot = await vPoll;
        expect(vGot.body.events.map((e) => e.content?.body)).toEqual(['v again']);
        await expectHealthy(url);
      }
    });
  });
}
