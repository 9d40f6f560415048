/**
 * XMPP through the whole gateway (adapter from the config file's adapters
 * section, real delivery engine, HTTP API) against a real Prosody: a MUC
 * user's message reaches HTTP sync once; an HTTP message reaches the MUC
 * once, with the relay prefix, and does not come back in.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { waitFor } from '../harness/free-port.js';
import { startGateway, type TestGateway } from '../harness/gateway.js';
import { TestUser, endUsers, NS } from '../integration/xmpp/helpers.js';

interface SyncBody {
  events: Array<{ eventId: string; kind: string; content?: { body: string }; sender: { uid: string } }>;
  next: string;
}

let server: ProsodyServer;
const gateways: TestGateway[] = [];
beforeAll(async () => {
  server = await startProsody();
  await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret')]);
});
afterAll(async () => {
  for (const g of gateways) await g.stop();
  await endUsers();
  await server?.stop();
});

describe('XMPP through the gateway', () => {
  it('MUC → HTTP sync once; HTTP → MUC once, relayed with the sender prefix, not ingested back', async () => {
    const room = `ops-${process.pid}@${server.mucDomain}`;
    const alice = await TestUser.login(server, 'alice', 'alice-secret');
    await alice.join(room, 'alice');

    const gw = await startGateway({
      redisUrl: inject('redisUrl'),
      config: {
        rooms: [{ id: 'ops', links: [{ endpoint: 'xmpp', target: room, options: { nick: 'bridge' } }] }],
        adapters: {
          xmpp: { type: 'xmpp', service: server.service, jid: `bridge@${server.domain}`, password: 'bridge-secret', reconnect: { minMs: 100, maxMs: 1000 }, selfPingIntervalMs: 0 },
        },
      },
    });
    gateways.push(gw);
    const adapter = gw.gateway.adapters[0];
    await waitFor(() => adapter?.status().ready === true, { timeoutMs: 30_000, what: 'the XMPP adapter to join the room' });
    const token = await gw.deviceToken('carol', ['ops']);
    const start = await gw.device<SyncBody>(token, 'GET', '/v1/sync?limit=10');

    await alice.say(room, 'hello from the MUC');
    const bodies = async () => (await gw.device<SyncBody>(token, 'GET', `/v1/sync?since=${encodeURIComponent(start.body.next)}&limit=50`)).body.events.filter((e) => e.kind === 'message').map((e) => e.content?.body);
    await waitFor(async () => (await bodies()).length >= 1, { timeoutMs: 15_000, what: 'the MUC message in sync' });
    expect(await bodies()).toEqual(['hello from the MUC']);

    const sent = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/x1', { kind: 'message', content: { body: 'hello from HTTP' } });
    expect(sent.status).toBe(200);
    const fromBridge = () => alice.stanzas.filter((s) => s.is('message') && s.attrs['from'] === `${room}/bridge` && (s.getChildText('body') ?? '').includes('hello from HTTP'));
    await waitFor(() => fromBridge().length >= 1, { timeoutMs: 15_000, what: 'the HTTP message in the MUC' });
    const [copy] = fromBridge();
    expect(copy?.getChildText('body')).toMatch(/^<carol> hello from HTTP$/);
    expect(copy?.getChild('origin-id', NS.sid)?.attrs['id']).toBe(sent.body.eventId);

    // the bridge's own reflection is an echo: sync still holds the two messages, once each
    const marker = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/x2', { kind: 'message', content: { body: 'second' } });
    await waitFor(() => alice.stanzas.some((s) => s.is('message') && s.getChild('origin-id', NS.sid)?.attrs['id'] === marker.body.eventId), { timeoutMs: 15_000, what: 'the second HTTP message in the MUC' });
    expect(await bodies()).toEqual(['hello from the MUC', 'hello from HTTP', 'second']);
    expect(fromBridge()).toHaveLength(1);
  });
});
