/**
 * Matrix through the whole gateway (configured from the config file's
 * adapters section): the homeserver fake pushes AS transactions to the
 * adapter; HTTP sends reach the Matrix room through the delivery engine.
 */
import { parse } from 'yaml';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { registrationYaml } from '../../adapters/matrix/config.js';
import type { MatrixAdapter } from '../../adapters/matrix/index.js';
import { createFakeHomeserver, type AppServiceRegistration, type FakeHomeserver } from '../harness/fake-homeserver.js';
import { waitFor } from '../harness/free-port.js';
import { startGateway, type TestGateway } from '../harness/gateway.js';

interface SyncBody {
  events: Array<{ eventId: string; kind: string; content?: { body: string }; sender: { uid: string; display?: string } }>;
  next: string;
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

describe('Matrix through the gateway (application service mode)', () => {
  it('a Matrix message reaches HTTP sync once; an HTTP message reaches Matrix once, from a ghost, and does not come back', async () => {
    const hs: FakeHomeserver = await createFakeHomeserver({ serverName: 'fake.test', appServiceRetry: { initialMs: 50, maxMs: 500 } });
    cleanup.push(() => hs.stop());
    const alice = hs.registerUser('alice', 'pw');
    const roomId = hs.createRoom(alice.userId, { name: 'Ops' });

    const gw: TestGateway = await startGateway({
      redisUrl: inject('redisUrl'),
      config: {
        rooms: [{ id: 'ops', links: [{ endpoint: 'matrix', target: roomId }] }],
        adapters: {
          matrix: {
            type: 'matrix',
            mode: 'appservice',
            homeserverUrl: hs.url,
            serverName: 'fake.test',
            stopGraceMs: 300,
            appservice: { asToken: 'as-token-0123456789abcdef', hsToken: 'hs-token-0123456789abcdef', url: 'http://127.0.0.1:9', listenHost: '127.0.0.1', listenPort: 0 },
          },
        },
      },
    });
    cleanup.push(() => gw.stop());
    expect(gw.gateway.adapters.map((a) => a.name)).toEqual(['matrix']);
    const adapter = gw.gateway.adapters[0] as MatrixAdapter;
    // register the AS with the homeserver from the registration file our CLI writes
    const config = (await import('../../src/config/index.js')).resolveConfig({
      adapters: {
        matrix: {
          type: 'matrix',
          homeserverUrl: hs.url,
          serverName: 'fake.test',
          appservice: { asToken: 'as-token-0123456789abcdef', hsToken: 'hs-token-0123456789abcdef', url: 'http://127.0.0.1:9' },
        },
      },
    });
    const matrixSection = config.adapters['matrix'];
    if (matrixSection?.type !== 'matrix') throw new Error('no matrix section');
    const reg = parse(registrationYaml(matrixSection.config)) as AppServiceRegistration;
    hs.registerAppService({ ...reg, url: null });
    const address = adapter.listenAddress();
    if (!address) throw new Error('the AS listener is not up');
    hs.setAppServiceUrl(reg.id, `http://127.0.0.1:${address.port}`);
    await waitFor(() => adapter.status().ready, { timeoutMs: 15_000, what: 'the Matrix adapter to be ready (bot joined)' });

    const token = await gw.deviceToken('carol', ['ops']);
    const start = await gw.device<SyncBody>(token, 'GET', '/v1/sync?limit=10');

    // Matrix → HTTP
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'hello from Matrix' });
    let bodies: string[] = [];
    await waitFor(
      async () => {
        const r = await gw.device<SyncBody>(token, 'GET', `/v1/sync?since=${encodeURIComponent(start.body.next)}&limit=50`);
        bodies = r.body.events.filter((e) => e.kind === 'message').map((e) => e.content?.body ?? '');
        return bodies.length >= 1;
      },
      { timeoutMs: 15_000, what: 'the Matrix message in sync' },
    );
    expect(bodies).toEqual(['hello from Matrix']);

    // HTTP → Matrix, as a ghost
    const sent = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/x1', { kind: 'message', content: { body: 'hello from HTTP' } });
    expect(sent.status).toBe(200);
    const fromGateway = () => hs.events(roomId).filter((e) => e.type === 'm.room.message' && (e.content as { body?: string }).body?.includes('hello from HTTP'));
    await waitFor(() => fromGateway().length >= 1, { timeoutMs: 15_000, what: 'the HTTP message in the Matrix room' });
    const [copy] = fromGateway();
    expect(copy?.sender).toMatch(/^@_sg_/);

    // the homeserver pushes the ghost's event back to the AS: it must not come back in
    await waitFor(() => hs.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 15_000, what: 'every transaction acknowledged' });
    const after = await gw.device<SyncBody>(token, 'GET', `/v1/sync?since=${encodeURIComponent(start.body.next)}&limit=50`);
    expect(after.body.events.filter((e) => e.kind === 'message').map((e) => e.content?.body)).toEqual(['hello from Matrix', 'hello from HTTP']);
    expect(fromGateway()).toHaveLength(1);
  });
});
