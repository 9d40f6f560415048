/**
 * The Matrix adapter in application-service mode against the homeserver
 * fake over real HTTP, with the real sink and links over a memory log.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { IngestSink } from '../../../src/core/adapter.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { SYNAPSE_1_67_VERSIONS } from '../../harness/fake-homeserver.js';
import { getFreePort, waitFor } from '../../harness/free-port.js';
import {
  appendApi,
  appserviceConfig,
  createEnv,
  Driver,
  HS_TOKEN,
  matrixLink,
  messagesIn,
  reasons,
  registerAppservice,
  roomEvents,
  startAdapter,
  waitForEvents,
  waitForTransactions,
  type Env,
} from './helpers.js';
import { echoCount, messagesBothWays, relationsBothWays, type ModeSpec } from './scenarios.js';

let env: Env;
const adapters: MatrixAdapter[] = [];

beforeEach(async () => {
  env = await createEnv();
});

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  await env.close();
});

async function start(overrides: Record<string, unknown> = {}, opts: { sink?: IngestSink; hsToken?: string } = {}, top: Record<string, unknown> = {}): Promise<MatrixAdapter> {
  const config = appserviceConfig(env, overrides, top);
  registerAppservice(env, config, opts.hsToken);
  const adapter = await startAdapter(env, config, opts.sink ? { sink: opts.sink } : {});
  adapters.push(adapter);
  return adapter;
}

const GHOST = '@_sg_api=3acarol:fake.test';
const BOT = '@syncgate:fake.test';

function asMode(adapter: MatrixAdapter): ModeSpec {
  return {
    speaker: GHOST,
    body: (text) => text,
    echoes: async (n) => {
      await waitFor(() => echoCount(adapter) >= n, { timeoutMs: 15_000, what: `${n} echoes` });
      await waitForTransactions(env);
    },
  };
}

/** PUT a transaction straight to the adapter's listener. */
async function push(adapter: MatrixAdapter, txnId: string, body: unknown, token: string | null = HS_TOKEN): Promise<{ status: number; body: Record<string, unknown> }> {
  const address = adapter.listenAddress();
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (token !== null) headers['Authorization'] = `Bearer ${token}`;
  const res = await fetch(`http://127.0.0.1:${address?.port}/_matrix/app/v1/transactions/${txnId}`, {
    method: 'PUT',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function roomEvent(env: Env, n: number, content: Record<string, unknown>, sender = '@alice:fake.test'): Record<string, unknown> {
  return { type: 'm.room.message', sender, room_id: env.roomId, event_id: `$synthetic${n}`, origin_server_ts: Date.now(), content, unsigned: {} };
}

describe('Matrix adapter, appservice mode', () => {
  it('bridges a Matrix message in once, and an HTTP message out once as the sender\'s ghost, with no echo', async () => {
    const adapter = await start();
    expect(adapter.status()).toMatchObject({ connected: true, ready: true });
    expect(env.hs.joinedMembers(env.roomId)).toContain('@syncgate:fake.test');
    await messagesBothWays(env, adapter, asMode(adapter));
    // The ghost has the sender's display name.
    const profile = await fetch(`${env.hs.url}/_matrix/client/v3/profile/${encodeURIComponent(GHOST)}/displayname`);
    expect(await profile.json()).toEqual({ displayname: 'Carol' });
  });

  it('maps replies, edits, reactions (add and remove), redactions and receipts both ways', async () => {
    const adapter = await start();
    await relationsBothWays(env, adapter, asMode(adapter));
  });

  it('appends a transaction once when its 200 was lost, and when the first attempt failed', async () => {
    let failNext = false;
    const real = createIngestSink({ log: env.log, logger: env.logger });
    const sink: IngestSink = {
      ...real,
      ingest: async (draft, options) => {
        if (failNext) {
          failNext = false;
          throw new Error('log unavailable');
        }
        return real.ingest(draft, options);
      },
    };
    const adapter = await start({}, { sink });
    await waitForTransactions(env);

    env.hs.failAppServiceNext(1, { afterDelivery: true });
    const lost = env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'ack lost' });
    await waitForTransactions(env);
    const lostTxn = env.hs.appServiceTransactions('syncgate').at(-1);
    expect(lostTxn?.attempts).toEqual([{ kind: 'ack-lost', status: 200 }, { kind: 'status', status: 200 }]);
    expect(await adapter.txns.isCompleted(lostTxn?.txnId ?? '')).toBe(true);

    failNext = true;
    const failed = env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'first attempt fails' });
    await waitForTransactions(env);
    expect(env.hs.appServiceTransactions('syncgate').at(-1)?.attempts.map((a) => a.kind === 'status' && a.status)).toEqual([500, 200]);

    const events = await roomEvents(env.log);
    expect(events.map((e) => e.origin.ids['mx.eventId'])).toEqual([lost, failed]);
    const inbound = adapter.status().detail?.['inbound'] as { appended: number; duplicate: number };
    // The ack-lost retry was answered from the transaction store without touching the log.
    expect(inbound).toMatchObject({ appended: 2, duplicate: 0 });
  });

  it('refuses a wrong hs_token with 403 and a missing one with 401, and appends nothing', async () => {
    const adapter = await start({}, { hsToken: 'not-the-hs-token-at-all' });
    env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'pushed with the wrong token' });
    await waitFor(() => (env.hs.appServiceTransactions('syncgate')[0]?.attempts.length ?? 0) >= 2, { timeoutMs: 10_000, what: 'two push attempts' });
    const attempts = env.hs.appServiceTransactions('syncgate')[0]?.attempts ?? [];
    expect(new Set(attempts.map((a) => JSON.stringify(a)))).toEqual(new Set([JSON.stringify({ kind: 'status', status: 403 })]));
    expect(await push(adapter, 'direct-1', { events: [] }, 'wrong')).toEqual({ status: 403, body: { errcode: 'M_FORBIDDEN', error: 'Wrong hs_token' } });
    expect(await push(adapter, 'direct-2', { events: [] }, null)).toEqual({ status: 401, body: { errcode: 'M_UNAUTHORIZED', error: 'Missing hs_token' } });
    expect(await roomEvents(env.log)).toEqual([]);
    expect(env.lines.some((l) => l.level === 40 && /missing or wrong hs_token/.test(l.msg))).toBe(true);
    // The other AS endpoints: ping answers, queries create nothing, the rest is unknown.
    const base = `http://127.0.0.1:${adapter.listenAddress()?.port}`;
    const auth = { Authorization: `Bearer ${HS_TOKEN}` };
    expect((await fetch(`${base}/_matrix/app/v1/ping`, { method: 'POST', headers: auth, body: '{}' })).status).toBe(200);
    const query = await fetch(`${base}/_matrix/app/v1/users/${encodeURIComponent('@_sg_x:fake.test')}`, { headers: auth });
    expect([query.status, ((await query.json()) as { errcode: string }).errcode]).toEqual([404, 'M_NOT_FOUND']);
    expect((await fetch(`${base}/_matrix/app/v1/nothing`, { headers: auth })).status).toBe(404);
    expect((await fetch(`${base}/_matrix/app/v1/transactions/x`, { method: 'POST', headers: auth, body: '{}' })).status).toBe(405);
    const transactions = adapter.status().detail?.['transactions'] as { unauthorised: number };
    expect(transactions.unauthorised).toBeGreaterThanOrEqual(4);
  });

  it('survives bad input: malformed events, HTML with script, a 1 MB body, non-JSON and oversized transactions', async () => {
    const adapter = await start({ maxBodyBytes: 2 * 1024 * 1024 });
    const big = 'x'.repeat(1024 * 1024);
    const res = await push(adapter, 'bad-1', {
      events: [
        { type: 'm.room.message', sender: '@alice:fake.test', room_id: env.roomId, origin_server_ts: 1, content: { msgtype: 'm.text', body: 'no id' } },
        { ...roomEvent(env, 1, {}), content: 'not an object' },
        'not even an object',
        roomEvent(env, 2, { msgtype: 'm.text', body: 'hi', format: 'org.matrix.custom.html', formatted_body: '<b>hi</b><script>alert(1)</script><a href="javascript:alert(2)">x</a>' }),
        roomEvent(env, 3, { msgtype: 'm.text', body: big }),
        roomEvent(env, 4, { msgtype: 'm.text', body: { nested: true } }),
        roomEvent(env, 5, { msgtype: 'm.text', body: 'after the bad ones' }),
      ],
      ephemeral: [{ type: 'm.receipt', room_id: env.roomId, content: { nonsense: 1 } }, 'junk'],
    });
    expect(res).toEqual({ status: 200, body: {} });
    const events = await roomEvents(env.log);
    expect(events.map((e) => e.origin.ids['mx.eventId'])).toEqual(['$synthetic2', '$synthetic3', '$synthetic5']);
    const [html, long] = events;
    expect(html?.kind === 'message' && html.content.formatted).toBe('<b>hi</b><a>x</a>');
    expect(long?.kind === 'message' && long.content.body.length).toBeLessThanOrEqual(65_536);
    expect(reasons(env.lines.filter((l) => l.level === 40))).toEqual(expect.arrayContaining(['malformed-event', 'html-sanitised', 'body-truncated']));
    expect(env.lines.filter((l) => l.reason === 'malformed-event').length).toBe(4);

    expect(await push(adapter, 'bad-2', '{"events": [')).toEqual({ status: 400, body: { errcode: 'M_NOT_JSON', error: 'Content not JSON' } });
    expect(await push(adapter, 'bad-3', { events: 'nope' })).toMatchObject({ status: 400, body: { errcode: 'M_BAD_JSON' } });
    expect((await push(adapter, 'bad-4', { events: [roomEvent(env, 6, { msgtype: 'm.text', body: 'y'.repeat(3 * 1024 * 1024) })] })).status).toBe(413);
    expect(env.lines.some((l) => /body too large/.test(l.msg))).toBe(true);
    // Still serving.
    expect(await push(adapter, 'good-1', { events: [roomEvent(env, 7, { msgtype: 'm.text', body: 'still here' })] })).toEqual({ status: 200, body: {} });
    expect((await roomEvents(env.log)).length).toBe(4);
  });

  it('delivers through a 429 storm in order, waiting as long as the homeserver asked', async () => {
    const adapter = await start();
    const driver = new Driver(adapter, env.log, matrixLink(env));
    // Registration and join happen first, so the storm hits the sends.
    await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'warm-up' } }));
    env.hs.rateLimitNext(4, '/send/', 1_000);
    const bodies = ['one', 'two', 'three'];
    for (const body of bodies) await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body } }));
    expect(messagesIn(env).filter((e) => e.type === 'm.room.message').map((e) => e.content['body'])).toEqual(['warm-up', ...bodies]);
    const retries = driver.attempts.filter((a) => a.result.status === 'retry');
    expect(retries).toHaveLength(4);
    for (const r of retries) expect(r.result).toMatchObject({ status: 'retry', afterMs: 1_000 });
    // Each next attempt came no earlier than the wait asked for.
    for (let i = 0; i < driver.attempts.length - 1; i++) {
      const a = driver.attempts[i];
      const b = driver.attempts[i + 1];
      if (a?.result.status === 'retry' && b) expect(b.at - a.at).toBeGreaterThanOrEqual(990);
    }
    expect((adapter.status().detail?.['outbound'] as { rateLimited: number }).rateLimited).toBe(4);
  });

  it('reports readiness: an unjoinable linked room, an encrypted room, an unreachable homeserver', async () => {
    const adapter = await start({}, {}, { healthCheckIntervalMs: 1_000 });
    const privateRoom = env.hs.createRoom(env.alice.userId, { preset: 'private_chat' });
    const encrypted = env.hs.createRoom(env.alice.userId, { initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    await env.log.rooms.put({ id: 'secret', links: [{ endpoint: 'matrix', target: privateRoom }] });
    await env.log.rooms.put({ id: 'e2ee', links: [{ endpoint: 'matrix', target: encrypted }] });
    await env.links.refresh();
    await waitFor(() => env.lines.some((l) => /end-to-end encrypted/.test(l.msg)), { timeoutMs: 10_000, what: 'the encrypted-room warning' });
    await waitFor(() => (adapter.status().detail?.['unjoinedRooms'] as unknown[]).length === 1, { timeoutMs: 10_000, what: 'the join attempt' });
    const status = adapter.status();
    expect(status.ready).toBe(false);
    expect(status.detail?.['unjoinedRooms']).toEqual([{ roomId: privateRoom, reason: expect.stringContaining('M_FORBIDDEN') }]);
    expect(status.detail?.['encryptedRooms']).toEqual([encrypted]);
    const driver = new Driver(adapter, env.log, { endpoint: 'matrix', target: encrypted });
    const event = await appendApi(env.log, { kind: 'message', content: { body: 'would leak' } });
    expect(await driver.deliver(event)).toMatchObject({ status: 'rejected', reason: expect.stringContaining('end-to-end encrypted') });
    // Into a room nobody of ours can join yet: retried (the engine backs off), not dead-lettered at once.
    const toPrivate = new Driver(adapter, env.log, { endpoint: 'matrix', target: privateRoom });
    expect(await toPrivate.deliver(event, 1)).toMatchObject({ status: 'retry', reason: expect.stringContaining('could not join') });
    // Invited later, the bot joins by itself, the adapter is ready again and the ghost gets in through the bot.
    env.hs.inviteUser(env.alice.userId, privateRoom, '@syncgate:fake.test');
    await waitFor(() => adapter.status().ready, { timeoutMs: 10_000, what: 'ready after the invite' });
    expect(env.hs.joinedMembers(privateRoom)).toContain('@syncgate:fake.test');
    expect(await toPrivate.deliver(event, 1)).toMatchObject({ status: 'delivered' });
    expect(env.hs.joinedMembers(privateRoom)).toContain(GHOST);

    await env.hs.stop();
    await waitFor(() => !adapter.status().connected, { timeoutMs: 10_000, what: 'the homeserver to be reported unreachable' });
    expect(adapter.status().ready).toBe(false);
  });
});

describe('Matrix adapter, appservice mode, started again after a stop (a lease lost and won back)', () => {
  it('the same instance listens on its port and rejoins like a new one: a message sent after the restart is ingested, and delivery works', async () => {
    const listenPort = await getFreePort();
    const adapter = await start({ listenPort });
    env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the stop' });
    await waitForEvents(env.log, (es) => es.length >= 1, 'the first message');
    await adapter.stop();
    expect(adapter.status().ready).toBe(false);

    // While another replica held the connection, the bot was removed from the room.
    env.hs.leaveRoom(BOT, env.roomId);
    await adapter.start();
    expect(adapter.listenAddress()?.port).toBe(listenPort);
    await waitFor(() => env.hs.joinedMembers(env.roomId).includes(BOT), { timeoutMs: 15_000, what: 'the bot to rejoin the linked room' });
    await waitFor(() => adapter.status().ready, { timeoutMs: 15_000, what: 'ready again after the restart' });
    env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'after the restart' });
    const events = await waitForEvents(env.log, (es) => es.length >= 2, 'the message sent after the restart in the log');
    expect(events.map((e) => e.kind === 'message' && e.content.body)).toEqual(['before the stop', 'after the restart']);

    const out = await appendApi(env.log, { kind: 'message', content: { body: 'out after the restart' } });
    expect(await new Driver(adapter, env.log, matrixLink(env)).deliver(out)).toMatchObject({ status: 'delivered' });
    expect(messagesIn(env).filter((m) => m.content['body'] === 'out after the restart')).toHaveLength(1);
  });

});

describe('Matrix adapter, appservice transactions', () => {
  it('transactions are tied to the homeserver: a known id with a new body (ids restarted after a database reset) is processed and logged; records expire after the TTL', async () => {
    const adapter = await start({ transactionTtlHours: 24 });
    expect(await push(adapter, '1', { events: [roomEvent(env, 101, { msgtype: 'm.text', body: 'before the reset' })] })).toEqual({ status: 200, body: {} });
    // A retransmission: answered, nothing appended again.
    expect((await push(adapter, '1', { events: [roomEvent(env, 101, { msgtype: 'm.text', body: 'before the reset' })] })).status).toBe(200);
    // The homeserver's database was restored: its transaction ids start again at 1, with new content.
    expect((await push(adapter, '1', { events: [roomEvent(env, 102, { msgtype: 'm.text', body: 'after the reset' })] })).status).toBe(200);
    const bodies = (await roomEvents(env.log)).flatMap((e) => (e.kind === 'message' ? [e.content.body] : []));
    expect(bodies).toEqual(['before the reset', 'after the reset']);
    expect(env.lines.some((l) => l.level === 40 && l.msg === 'known transaction id with a different body (did the homeserver restart its ids?); processing it')).toBe(true);

    // A record older than the TTL is forgotten and removed: the hash grows no longer than the TTL allows.
    const key = 'txn\u0000old';
    await env.state.set('matrix:matrix', key, JSON.stringify({ at: Date.now() - 25 * 3600_000, hash: 'x' }));
    expect(await adapter.txns.completed('old')).toBeUndefined();
    expect(await adapter.txns.prune()).toBeGreaterThanOrEqual(1);
    expect(await env.state.get('matrix:matrix', key)).toBeUndefined();
    expect(await adapter.txns.isCompleted('1')).toBe(true);
  });

  it('asks the homeserver to ping its listener at start (spec v1.7), and shows the result in the status', async () => {
    const port = await getFreePort();
    const config = appserviceConfig(env, { listenPort: port, url: `http://127.0.0.1:${port}` });
    registerAppservice(env, config);
    // The homeserver knows where we listen before we start, as with a registration file.
    env.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${port}`);
    const adapter = await startAdapter(env, config);
    adapters.push(adapter);
    await waitFor(() => env.hs.appServicePings('syncgate') === 1, { timeoutMs: 15_000, what: 'the ping at start' });
    await waitFor(() => (adapter.status().detail?.['ping'] as { ok?: boolean } | undefined)?.ok === true, { timeoutMs: 15_000, what: 'the ping in the status' });
  });

  it('does not ping a homeserver whose /versions stops before v1.7 (Synapse 1.67 lists up to v1.2), and works with it', async () => {
    const old = await createEnv({ hs: { specVersions: SYNAPSE_1_67_VERSIONS } });
    try {
      const port = await getFreePort();
      const config = appserviceConfig(old, { listenPort: port, url: `http://127.0.0.1:${port}` });
      registerAppservice(old, config);
      old.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${port}`);
      const adapter = await startAdapter(old, config);
      adapters.push(adapter);
      await waitFor(() => adapter.status().detail?.['ping'] !== undefined, { timeoutMs: 15_000, what: 'the ping decision' });
      expect(adapter.status().detail?.['ping']).toEqual({ supported: false });
      expect(old.hs.requests().some((r) => r.path.includes('/appservice/'))).toBe(false);
      old.hs.sendAsUser(old.alice.userId, old.roomId, 'm.room.message', { msgtype: 'm.text', body: 'from an old Synapse' });
      await waitForEvents(old.log, (es) => es.some((x) => x.kind === 'message' && x.content.body === 'from an old Synapse'), 'the message in the log');
      await adapter.stop();
    } finally {
      await old.close();
    }
  });
});
