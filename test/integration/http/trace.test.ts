/**
 * Trace by native id at any depth (issue 25): the native ids an event came
 * with (an XMPP stanza id and client id, scoped in the log, typed raw by an
 * operator) and those its deliveries returned are indexed where they are
 * learnt, so an event with 600 newer events in its room is still found, in
 * its room or with no room given. On a real Redis.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { waitFor } from '../../harness/free-port.js';
import { TestAdapter } from '../../harness/test-adapter.js';
import { testPrefix } from '../../harness/redis.js';
import { message } from '../../fixtures/events.js';

const NEWER = 600;
let gw: TestGateway;
let remote: TestAdapter;

interface Traced {
  room: string;
  eventId: string;
  deliveries: Array<{ endpoint: string; state: string; nativeIds?: Record<string, string> }>;
}

beforeAll(async () => {
  gw = await startGateway({
    redisUrl: inject('redisUrl'),
    prefix: testPrefix('trace'),
    extraAdapters: ({ sink }) => [(remote = new TestAdapter('remote', sink))],
  });
  for (const room of ['deep', 'other']) expect((await gw.admin('PUT', `/v1/admin/rooms/${room}`, { links: [{ endpoint: 'remote', target: `${room}@muc.example` }] })).status).toBe(200);
}, 60_000);

afterAll(async () => {
  await gw?.stop();
});

describe('trace by native id', () => {
  it('finds an event by the native ids it came with and those its delivery returned, behind 600 newer events', async () => {
    // from the XMPP side: ids scoped as the XMPP adapter stores them (archive/raw, conversation/sender/raw)
    const inbound = await remote.receive({
      ...message('deep', 'from the MUC'),
      sender: { uid: 'xmpp:alice@example.org', proto: 'xmpp', native: 'alice@example.org', display: 'Alice', auth: 'server' },
      origin: { proto: 'xmpp', via: 'remote', ids: { 'xmpp.stanzaId': 'deep@muc.example/st-7f3a9c', 'xmpp.id': 'deep@muc.example/n:alice/cl-42b1' } },
    });
    expect(inbound.status).toBe('appended');
    const inboundId = (inbound as { eventId: string }).eventId;
    // from the API: delivered to the remote side, which answers with its native id
    const sent = await gw.gateway.log.append(message('deep', 'to the MUC'));
    await waitFor(async () => (await gw.gateway.log.delivery.deliveredIds('deep', sent.eventId, 'remote')) !== undefined, { timeoutMs: 30_000, what: 'the delivery to the remote side' });

    for (let i = 0; i < NEWER; i++) await gw.gateway.log.append(message('deep', `newer ${i}`));
    await gw.gateway.log.append(message('other', 'another room'));

    for (const [id, eventId] of [
      ['st-7f3a9c', inboundId],
      ['cl-42b1', inboundId],
      ['deep@muc.example/st-7f3a9c', inboundId],
      [`remote-${sent.eventId}`, sent.eventId],
    ] as const) {
      for (const query of ['', '?room=deep']) {
        const r = await gw.admin<Traced>('GET', `/v1/admin/trace/${encodeURIComponent(id)}${query}`);
        expect(r.status, `trace ${id}${query}`).toBe(200);
        expect(r.body.eventId).toBe(eventId);
        expect(r.body.room).toBe('deep');
      }
    }
    const delivered = await gw.admin<Traced>('GET', `/v1/admin/trace/${encodeURIComponent(`remote-${sent.eventId}`)}`);
    expect(delivered.body.deliveries).toEqual([expect.objectContaining({ endpoint: 'remote', state: 'delivered', nativeIds: { 'test.id': `remote-${sent.eventId}` } })]);

    // not in another room, and an unknown id is a 404
    expect((await gw.admin('GET', `/v1/admin/trace/st-7f3a9c?room=other`)).status).toBe(404);
    expect((await gw.admin('GET', `/v1/admin/trace/st-unknown`)).status).toBe(404);
  }, 120_000);

  it('still finds an event appended before native ids were indexed (an older build): by its Matrix event id, and by a recent scoped stanza id', async () => {
    // appended as an older build did: the native key only, no trace keys
    const fromMatrix = await gw.gateway.log.append(
      { ...message('other', 'from Matrix, before the index'), origin: { proto: 'matrix', via: 'remote', ids: { 'mx.eventId': '$old-event:example.org' } } },
      { aliases: ['matrix:mx.eventId:$old-event:example.org'] },
    );
    const fromXmpp = await gw.gateway.log.append(
      { ...message('other', 'from XMPP, before the index'), origin: { proto: 'xmpp', via: 'remote', ids: { 'xmpp.stanzaId': 'other@muc.example/st-old-1' } } },
      { aliases: ['xmpp:xmpp.stanzaId:other@muc.example/st-old-1'] },
    );
    expect(await gw.gateway.log.resolve('other', 'trace:st-old-1')).toBeUndefined();
    for (const [id, eventId] of [
      ['$old-event:example.org', fromMatrix.eventId],
      ['st-old-1', fromXmpp.eventId],
    ] as const) {
      for (const query of ['', '?room=other']) {
        const r = await gw.admin<Traced>('GET', `/v1/admin/trace/${encodeURIComponent(id)}${query}`);
        expect(r.status, `trace ${id}${query}`).toBe(200);
        expect(r.body.eventId).toBe(eventId);
      }
    }
  }, 120_000);
});
