/**
 * /v1/sync with small limits over all sixteen partitions (memory and Redis):
 * every limit from 1 up pages through every partition's events, and a
 * long-poll with limit=1 waits for, then returns, the next event.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { partitionOf } from '../../../src/core/position.js';
import { adminDevice, adminRoom, adminUser, expectStatus, makeLog, send, startApp, type TestApp } from './helpers.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

interface SyncBody {
  events: Array<{ eventId: string; content: { body?: string } }>;
  next: string;
}

for (const backend of ['memory', 'redis'] as const) {
  describe(`sync with small limits (${backend} log, 16 partitions)`, () => {
    it('limit=1..3 return the next events of any partition, and a limit=1 long-poll returns the next event', async () => {
      const t = await startApp({ log: makeLog({ partitions: 16, ...(backend === 'redis' ? { redisUrl: inject('redisUrl') } : {}) }) });
      open.push(t);
      const rooms = new Map<number, string>();
      for (let i = 0; rooms.size < 16; i++) if (!rooms.has(partitionOf(`lim${i}`, 16))) rooms.set(partitionOf(`lim${i}`, 16), `lim${i}`);
      for (const room of rooms.values()) await adminRoom(t.client, room);
      await adminUser(t.client, 'ann', [...rooms.values()]);
      const ann = await adminDevice(t.client, 'ann');
      const start = (expectStatus(await t.client.request('GET', '/v1/sync?limit=1', { token: ann.token }), 200).body as SyncBody).next;
      // the highest partitions first: those a small limit used never to reach
      const sent: string[] = [];
      for (const p of [...rooms.keys()].sort((a, b) => b - a)) sent.push((await send(t.client, ann, rooms.get(p) ?? '', `p${p}`)).eventId);
      for (const limit of [1, 2, 3]) {
        const seen: string[] = [];
        let next = start;
        while (seen.length < sent.length) {
          const page = (expectStatus(await t.client.request('GET', `/v1/sync?limit=${limit}&since=${next}`, { token: ann.token }), 200).body as SyncBody);
          expect(page.events.length, `limit=${limit} after ${seen.length} events`).toBeGreaterThan(0);
          expect(page.events.length).toBeLessThanOrEqual(limit);
          seen.push(...page.events.map((e) => e.eventId));
          next = page.next;
        }
        expect(seen.sort()).toEqual([...sent].sort());
      }
      // a long-poll with limit=1 from before the last event of the highest partition returns it
      const last = await send(t.client, ann, rooms.get(15) ?? '', 'late');
      const before = (expectStatus(await t.client.request('GET', `/v1/sync?limit=1000&since=${start}`, { token: ann.token }), 200).body as SyncBody);
      expect(before.events.at(-1)?.eventId).toBe(last.eventId);
      const head = before.next;
      const poll = t.client.request('GET', `/v1/sync?limit=1&timeout=30000&since=${head}`, { token: ann.token });
      const wanted = await send(t.client, ann, rooms.get(14) ?? '', 'wanted');
      const got = (expectStatus(await poll, 200).body as SyncBody);
      expect(got.events.map((e) => e.eventId)).toEqual([wanted.eventId]);
    });
  });
}
