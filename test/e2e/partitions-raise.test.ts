/**
 * Raising the partition count of a running deployment (issue 24): replicas at
 * 16 partitions, devices holding cursors, a rolling restart to 64 (a replica
 * at 16 and one at 64 serving together), then only 64. Every device's sync
 * from its old cursor gives exactly the events after it, once, in room order,
 * through either replica; rooms created after the change are delivered too;
 * a replica started with a lower count is refused.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { isSyncgateError } from '../../src/core/errors.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';
import { startGateway, type TestGateway } from '../harness/gateway.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';

interface SyncPage {
  events: Array<{ room: string; kind: string; content?: { body?: string } }>;
  next: string;
}

/** Pages /v1/sync from `since` until an empty page: the message bodies by room, in order, and the last `next`. */
async function syncAll(gw: TestGateway, token: string, since: string | undefined): Promise<{ seen: Array<{ room: string; body: string }>; next: string }> {
  const seen: Array<{ room: string; body: string }> = [];
  let cursor = since;
  for (let guard = 0; guard < 200; guard++) {
    const q = new URLSearchParams({ limit: '5', timeout: '0', ...(cursor !== undefined ? { since: cursor } : {}) });
    const res = await gw.device<SyncPage>(token, 'GET', `/v1/sync?${q.toString()}`);
    expect(res.status).toBe(200);
    for (const e of res.body.events) if (e.kind === 'message' && e.content?.body?.startsWith('m')) seen.push({ room: e.room, body: e.content.body });
    if (res.body.events.length === 0 && cursor !== undefined) return { seen, next: res.body.next };
    cursor = res.body.next;
  }
  throw new Error('sync did not end');
}

/** Exactly these bodies, each once, and in send order within each room. */
function expectExactly(seen: ReadonlyArray<{ room: string; body: string }>, expected: readonly string[]): void {
  expect(seen.map((s) => s.body).sort()).toEqual([...expected].sort());
  const byRoom = new Map<string, number[]>();
  for (const s of seen) byRoom.set(s.room, [...(byRoom.get(s.room) ?? []), Number(s.body.slice(1))]);
  for (const seq of byRoom.values()) expect(seq).toEqual([...seq].sort((a, b) => a - b));
}

describe('raising partitions on a running deployment (16 → 64)', () => {
  const running: TestGateway[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((g) => g.stop()));
  });
  const start = async (prefix: string, partitions: number) => {
    const gw = await startGateway({ redisUrl: inject('redisUrl'), prefix, config: { partitions } });
    running.push(gw);
    return gw;
  };
  const stop = async (gw: TestGateway) => {
    running.splice(running.indexOf(gw), 1);
    await gw.stop();
  };

  it('keeps every cursor through a rolling restart, with replicas at 16 and 64 serving together, raises by admin command, and refuses a lower count', async () => {
    const prefix = testPrefix('raise');
    const a16 = await start(prefix, 16);
    const b16 = await start(prefix, 16);
    const rooms = Array.from({ length: 12 }, (_, i) => `s${i}`);
    for (const room of rooms) expect((await a16.admin('PUT', `/v1/admin/rooms/${room}`, { links: [] })).status).toBeLessThan(300);
    const grants = [rooms, rooms.slice(0, 1), rooms.slice(4, 9)];
    const tokens = await Promise.all(grants.map((g, i) => a16.deviceToken(`u${i}`, g)));
    const writer = await a16.deviceToken('writer', rooms);
    const send = async (gw: TestGateway, room: string, body: string) => expect((await gw.device(writer, 'PUT', `/v1/rooms/${room}/send/${body}`, { kind: 'message', content: { body } })).status).toBe(200);
    for (let i = 0; i < 24; i++) await send(i % 2 ? a16 : b16, rooms[i % 12] ?? '', `m${i}`);
    const cursors = await Promise.all(tokens.map(async (t) => (await syncAll(b16, t, undefined)).next));
    for (let i = 24; i < 48; i++) await send(a16, rooms[i % 12] ?? '', `m${i}`);
    const fresh = Array.from({ length: 10 }, (_, i) => `t${i}`);
    // m0..m47 go to the old rooms; from m48 even ones to the old rooms, odd ones to rooms created after the change
    const roomOf = (n: number) => (n < 48 || n % 2 === 0 ? (rooms[n % 12] ?? '') : (fresh[n % 10] ?? ''));
    const after = (grant: readonly string[], from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i).filter((n) => grant.includes(roomOf(n))).map((n) => `m${n}`);

    // rolling restart: b comes back at 64 while a still runs at 16
    await stop(b16);
    const b64 = await start(prefix, 64);
    expect(b64.gateway.log.info.partitions).toBe(64);
    for (const [d, token] of tokens.entries()) {
      expectExactly((await syncAll(b64, token, cursors[d])).seen, after(grants[d] ?? [], 24, 48));
      expectExactly((await syncAll(a16, token, cursors[d])).seen, after(grants[d] ?? [], 24, 48));
    }
    // rooms created after the change, on the new replica, reached through the old one too
    for (const room of fresh) expect((await b64.admin('PUT', `/v1/admin/rooms/${room}`, { links: [] })).status).toBeLessThan(300);
    for (const room of fresh) expect((await a16.admin('PUT', `/v1/admin/users/u0/rooms/${room}`)).status).toBeLessThan(300);
    await a16.deviceToken('writer', fresh);
    for (let i = 48; i < 68; i++) await send(i % 2 ? a16 : b64, roomOf(i), `m${i}`);
    const all = after([...rooms, ...fresh], 24, 68);
    expectExactly((await syncAll(a16, tokens[0] ?? '', cursors[0])).seen, all);
    expectExactly((await syncAll(b64, tokens[0] ?? '', cursors[0])).seen, all);
    expect(a16.gateway.log.info.partitions).toBe(64);

    // the last replica restarts at 64: the cursors from 16 still give everything after them
    await stop(a16);
    const a64 = await start(prefix, 64);
    expectExactly((await syncAll(a64, tokens[0] ?? '', cursors[0])).seen, all);
    for (const d of [1, 2]) expectExactly((await syncAll(a64, tokens[d] ?? '', cursors[d])).seen, after(grants[d] ?? [], 24, 68));

    // the admin command raises it on the running deployment; lowering is refused there too
    const raised = await a64.admin<{ partitions: number }>('PUT', '/v1/admin/partitions', { partitions: 128 });
    expect(raised).toEqual({ status: 200, body: { partitions: 128 } });
    const lowered = await a64.admin<{ code: string }>('PUT', '/v1/admin/partitions', { partitions: 64 });
    expect(lowered.status).toBe(409);
    expect(lowered.body.code).toBe('SG_ERR_PARTITIONS_LOWERED');
    expect((await a64.admin<{ partitions: number }>('GET', '/v1/admin/partitions')).body.partitions).toBe(128);
    expectExactly((await syncAll(a64, tokens[0] ?? '', cursors[0])).seen, all);

    // a replica started with fewer partitions than the log's is refused, and says why
    let refused: unknown;
    try {
      await start(prefix, 16);
    } catch (err) {
      refused = err;
    }
    expect(isSyncgateError(refused) ? refused.code : String(refused)).toBe('SG_ERR_PARTITIONS_LOWERED');
  }, 240_000);

  it('GET|PUT /v1/admin/log-format: a new log is at format 3, lowering is refused, the admin token is required', async () => {
    const gw = await start(testPrefix('logfmt'), 4);
    expect(await gw.admin<{ format: number }>('GET', '/v1/admin/log-format')).toEqual({ status: 200, body: { format: 3 } });
    expect(await gw.admin<{ format: number }>('PUT', '/v1/admin/log-format', { format: 3 })).toEqual({ status: 200, body: { format: 3 } });
    for (const lower of [1, 2]) {
      const lowered = await gw.admin<{ code: string }>('PUT', '/v1/admin/log-format', { format: lower });
      expect(lowered.status).toBe(409);
      expect(lowered.body.code).toBe('SG_ERR_LOG_FORMAT_LOWERED');
    }
    expect((await gw.admin('PUT', '/v1/admin/log-format', { format: 4 })).status).toBe(400);
    expect((await gw.device(await gw.deviceToken('u', []), 'PUT', '/v1/admin/log-format', { format: 3 })).status).toBe(401);
  }, 60_000);

  it('a replica without adapters follows a raise of the write format within a lease period', async () => {
    const prefix = testPrefix('logfmtfollow');
    const admin = new Redis(inject('redisUrl'));
    const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
    const startFast = async () => {
      const gw = await startGateway({ redisUrl: inject('redisUrl'), prefix, config: { partitions: 2, delivery: { leaseMs: 500 } } });
      running.push(gw);
      return gw;
    };
    try {
      // a log as a build before the gate left it: no stored write format
      const setup = await startFast();
      expect((await setup.admin('PUT', '/v1/admin/rooms/f', { links: [] })).status).toBeLessThan(300);
      await stop(setup);
      await admin.hdel(keys.partitionMeta(), 'format');
      const a = await startFast();
      const b = await startFast();
      const writer = await b.deviceToken('writer', ['f']);
      const p = Number(await admin.hget(keys.roomPartitions(), 'f'));
      /** b sends one; the stored entry's first field name: `k` for format 1, `e` for format 2, `f` for format 3 */
      const sendFromB = async (n: number) => {
        expect((await b.device(writer, 'PUT', `/v1/rooms/f/send/fmt${n}`, { kind: 'message', content: { body: `m${n}` } })).status).toBe(200);
        const [[, fields] = ['', []]] = (await admin.xrevrange(keys.room(p, 'f'), '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
        return fields[0];
      };
      expect(await sendFromB(0)).toBe('k');
      expect(await a.admin('PUT', '/v1/admin/log-format', { format: 2 })).toEqual({ status: 200, body: { format: 2 } });
      let n = 1;
      const deadline = Date.now() + 20_000;
      while ((await sendFromB(n)) !== 'e') {
        n++;
        expect(Date.now()).toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(await a.admin('PUT', '/v1/admin/log-format', { format: 3 })).toEqual({ status: 200, body: { format: 3 } });
      const later = Date.now() + 20_000;
      while ((await sendFromB(n)) !== 'f') {
        n++;
        expect(Date.now()).toBeLessThan(later);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // every message b sent reads back, whichever format it was stored in
      const { body } = await b.device<{ events: Array<{ content?: { body: string } }> }>(writer, 'GET', '/v1/rooms/f/messages?dir=f&limit=100');
      expect(body.events.map((e) => e.content?.body)).toEqual(Array.from({ length: n + 1 }, (_, i) => `m${i}`));
    } finally {
      await admin.quit();
    }
    await Promise.all(running.splice(0).map((g) => g.stop()));
    const cleanup = new Redis(inject('redisUrl'));
    await dropPrefix(cleanup, prefix);
    await cleanup.quit();
  }, 60_000);
});
