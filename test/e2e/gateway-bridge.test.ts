/**
 * The bridge end to end through the HTTP API: a room linked to a test adapter
 * (an honest implementation of the adapter port) and to API devices.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { ECHO_ID_KEY } from '../../src/core/adapter.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { startGateway, type TestGateway } from '../harness/gateway.js';
import { TestAdapter } from '../harness/test-adapter.js';

interface SyncBody {
  events: Array<{ eventId: string; room: string; content?: { body: string }; sender: { uid: string } }>;
  next: string;
}

const running: TestGateway[] = [];
afterEach(async () => {
  for (const g of running.splice(0)) await g.stop();
});

describe('bridging through the gateway', () => {
  it('HTTP → adapter and adapter → HTTP sync, neither echoed back to its origin', async () => {
    let remote: TestAdapter | undefined;
    const gw = await startGateway({
      redisUrl: inject('redisUrl'),
      extraAdapters: ({ sink }) => [(remote = new TestAdapter('remote', sink))],
    });
    running.push(gw);
    if (!remote) throw new Error('no adapter');
    const adapter = remote;
    expect((await gw.admin('PUT', '/v1/admin/rooms/ops', { name: 'Ops', links: [{ endpoint: 'remote', target: 'ops@remote' }] })).status).toBeLessThan(300);
    const token = await gw.deviceToken('alice', ['ops']);
    const start = await gw.device<SyncBody>(token, 'GET', '/v1/sync?limit=10');

    const sent = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/t1', { kind: 'message', content: { body: 'from HTTP' } });
    expect(sent.status).toBe(200);
    await waitFor(async () => (await adapter.recorder.all()).some((d) => d.eventId === sent.body.eventId), { timeoutMs: 15_000, what: 'delivery to the adapter' });

    // the remote side reflects our message (as a MUC would) and sends one of its own
    const echo = await adapter.receive({ ...message('ops', 'from HTTP'), origin: { proto: 'xmpp', via: 'remote', ids: { [ECHO_ID_KEY]: sent.body.eventId, 'xmpp.stanzaId': 'room-sid-1' } } });
    expect(echo.status).toBe('echo');
    const inbound = await adapter.receive({
      ...message('ops', 'from the remote side'),
      sender: { uid: 'xmpp:bob@remote', proto: 'xmpp', native: 'bob@remote', auth: 'server' },
      origin: { proto: 'xmpp', via: 'remote', ids: { 'xmpp.stanzaId': 'room-sid-2' } },
    });
    expect(inbound.status).toBe('appended');

    const synced = await gw.device<SyncBody>(token, 'GET', `/v1/sync?since=${encodeURIComponent(start.body.next)}&timeout=5000&limit=50`);
    expect(synced.body.events.map((e) => e.content?.body)).toEqual(['from HTTP', 'from the remote side']);

    // the adapter never gets back what came from it: only the HTTP message was delivered
    const later = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/t2', { kind: 'message', content: { body: 'later' } });
    await waitFor(async () => (await adapter.recorder.all()).some((d) => d.eventId === later.body.eventId), { timeoutMs: 15_000, what: 'the second delivery' });
    expect((await adapter.recorder.all()).map((d) => d.eventId)).toEqual([sent.body.eventId, later.body.eventId]);
    expect(await adapter.recorder.duplicates()).toBe(0);
  });

  it('links changed through the admin API take effect without restarting adapters', async () => {
    let remote: TestAdapter | undefined;
    const gw = await startGateway({ redisUrl: inject('redisUrl'), extraAdapters: ({ sink }) => [(remote = new TestAdapter('remote', sink))] });
    running.push(gw);
    const adapter = remote as TestAdapter;
    await gw.admin('PUT', '/v1/admin/rooms/ops', { links: [] });
    const token = await gw.deviceToken('alice', ['ops']);
    const before = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/a1', { kind: 'message', content: { body: 'not linked yet' } });
    await gw.admin('PUT', '/v1/admin/rooms/ops', { links: [{ endpoint: 'remote', target: 'ops@remote' }] });
    await waitFor(() => gw.gateway.links.linksOfRoom('ops').length === 1, { timeoutMs: 5000, what: 'the link change to arrive' });
    const after = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/a2', { kind: 'message', content: { body: 'linked' } });
    await waitFor(async () => (await adapter.recorder.all()).some((d) => d.eventId === after.body.eventId), { timeoutMs: 15_000, what: 'the delivery after linking' });
    // whether the message sent before the link was still in flight when the link arrived is a race; the later one must arrive
    expect((await adapter.recorder.all()).map((d) => d.eventId).filter((id) => id !== before.body.eventId)).toEqual([after.body.eventId]);
    // routing inbound: the target resolves to the room
    expect(gw.gateway.links.roomsFor('remote', 'ops@remote')).toEqual(['ops']);
  });
});

describe('gateway admin API for the bridge', () => {
  it('lists, replays and drops dead letters', async () => {
    let remote: TestAdapter | undefined;
    const gw = await startGateway({ redisUrl: inject('redisUrl'), extraAdapters: ({ sink }) => [(remote = new TestAdapter('remote', sink))], delivery: { maxAttempts: 2 } });
    running.push(gw);
    const adapter = remote as TestAdapter;
    await adapter.start();
    await gw.admin('PUT', '/v1/admin/rooms/ops', { links: [{ endpoint: 'remote', target: 'ops@remote' }] });
    adapter.controls.failRooms.add('ops');
    const token = await gw.deviceToken('alice', ['ops']);
    const a = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/d1', { kind: 'message', content: { body: 'one' } });
    const b = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/d2', { kind: 'message', content: { body: 'two' } });
    type Listing = { deadLetters: Array<{ id: string; eventId: string; group: string; attempts: number }>; total: number };
    await waitFor(async () => (await gw.admin<Listing>('GET', '/v1/admin/dead-letters')).body.total === 2, { timeoutMs: 15_000, what: 'two dead letters' });
    const listing = (await gw.admin<Listing>('GET', '/v1/admin/dead-letters?group=out:remote')).body;
    expect(listing.deadLetters.map((d) => d.eventId)).toEqual([a.body.eventId, b.body.eventId]);
    expect(listing.deadLetters.every((d) => d.group === 'out:remote' && d.attempts === 2)).toBe(true);
    expect((await gw.device(token, 'GET', '/v1/admin/dead-letters')).status).toBe(401);
    expect((await gw.admin('POST', '/v1/admin/dead-letters/replay', {})).status).toBe(400);

    const dropped = await gw.admin<{ dropped: number }>('POST', '/v1/admin/dead-letters/drop', { ids: [listing.deadLetters[0]?.id] });
    expect(dropped.body.dropped).toBe(1);
    adapter.controls.failRooms.clear();
    const replayed = await gw.admin<{ replayed: number }>('POST', '/v1/admin/dead-letters/replay', { all: true, group: 'out:remote' });
    expect(replayed.body.replayed).toBe(1);
    await waitFor(async () => (await adapter.recorder.all()).length === 1, { timeoutMs: 15_000, what: 'the replayed delivery' });
    expect((await adapter.recorder.all()).map((d) => d.eventId)).toEqual([b.body.eventId]);
    expect((await gw.admin<Listing>('GET', '/v1/admin/dead-letters')).body.total).toBe(0);
  });

  it('refuses room links to unknown endpoints or with invalid targets, listing every problem', async () => {
    const gw = await startGateway({ extraAdapters: ({ sink }) => [new TestAdapter('remote', sink)] });
    running.push(gw);
    const bad = await gw.admin<{ code: string; details: { problems: string[] } }>('PUT', '/v1/admin/rooms/ops', {
      links: [
        { endpoint: 'remote', target: 'fine' },
        { endpoint: 'nosuch', target: 'x' },
        { endpoint: 'ghost', target: 'y' },
      ],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe('SG_ERR_ROOM_INVALID');
    expect(bad.body.details.problems).toHaveLength(2);
    expect(bad.body.details.problems[0]).toMatch(/no adapter named nosuch/);
    expect((await gw.admin('GET', '/v1/admin/rooms/ops')).status).toBe(404);
  });
});
