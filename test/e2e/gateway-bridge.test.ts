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
