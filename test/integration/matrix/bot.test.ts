/**
 * The Matrix adapter in bot mode (one relay account, /sync) against the
 * homeserver fake, with the real sink and links over a memory log; the
 * mid-batch crash test runs over the Redis log and keeps the sync token in
 * the log's state store, as the runtime will.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { IngestSink } from '../../../src/core/adapter.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { AdapterStore } from '../../../adapters/matrix/store.js';
import { waitFor } from '../../harness/free-port.js';
import { testPrefix } from '../../harness/redis.js';
import { appendApi, botConfig, createEnv, Driver, matrixLink, messagesIn, roomEvents, startAdapter, waitForEvents, type Env } from './helpers.js';
import { echoCount, messagesBothWays, relationsBothWays, type ModeSpec } from './scenarios.js';

const RELAY = '@relay:fake.test';
let env: Env | undefined;
const adapters: MatrixAdapter[] = [];
const releases: (() => void)[] = [];

afterEach(async () => {
  for (const r of releases.splice(0)) r();
  for (const a of adapters.splice(0)) await a.stop();
  await env?.close();
  env = undefined;
});

async function setup(opts: { redis?: boolean } = {}): Promise<Env> {
  env = await createEnv(opts.redis ? { redis: { url: inject('redisUrl'), prefix: testPrefix('mxbot') } } : {});
  env.hs.registerUser('relay', 'relay-pw');
  return env;
}

async function start(e: Env, overrides: Record<string, unknown> = {}, sink?: IngestSink): Promise<MatrixAdapter> {
  const adapter = await startAdapter(e, botConfig(e, overrides), sink ? { sink } : {});
  adapters.push(adapter);
  return adapter;
}

function botMode(adapter: MatrixAdapter): ModeSpec {
  return {
    speaker: RELAY,
    body: (text) => `<Carol> ${text}`,
    echoes: (n) => waitFor(() => echoCount(adapter) >= n, { timeoutMs: 15_000, what: `${n} echoes` }),
  };
}

function messageBodies(events: Awaited<ReturnType<typeof roomEvents>>): string[] {
  return events.flatMap((e) => (e.kind === 'message' ? [e.content.body] : []));
}

describe('Matrix adapter, bot mode', () => {
  it('bridges a Matrix message in once, and an HTTP message out once with the sender prefix, with no echo', async () => {
    const e = await setup();
    const adapter = await start(e);
    expect(adapter.status()).toMatchObject({ connected: true, ready: true, detail: { mode: 'bot', userId: RELAY } });
    expect(e.hs.joinedMembers(e.roomId)).toContain(RELAY);
    await messagesBothWays(e, adapter, botMode(adapter));

    // A rate-limited send waits as asked and keeps the order.
    const driver = new Driver(adapter, e.log, matrixLink(e));
    e.hs.rateLimitNext(2, '/send/', 1_000);
    for (const body of ['after 429 a', 'after 429 b']) await driver.deliver(await appendApi(e.log, { kind: 'message', content: { body } }));
    expect(messagesIn(e).slice(-2).map((m) => m.content['body'])).toEqual(['<Carol> after 429 a', '<Carol> after 429 b']);
    expect(driver.attempts.filter((a) => a.result.status === 'retry').map((a) => a.result.status === 'retry' && a.result.afterMs)).toEqual([1_000, 1_000]);
  });

  it('maps replies, edits, reactions (add and remove), redactions and receipts both ways', async () => {
    const e = await setup();
    const adapter = await start(e);
    await relationsBothWays(e, adapter, botMode(adapter));
  });

  it('fills a limited timeline from /messages: every event once, in order', async () => {
    const e = await setup();
    const tokens = new AdapterStore(e.state, 'matrix:matrix').syncToken(RELAY);
    const first = await start(e, { timelineLimit: 3 });
    await waitFor(async () => (await tokens.get()) !== undefined, { timeoutMs: 10_000, what: 'the first sync token' });
    await first.stop();
    const bodies = Array.from({ length: 8 }, (_, i) => `while away ${i + 1}`);
    for (const body of bodies) e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body });
    const second = await start(e, { timelineLimit: 3 });
    const events = await waitForEvents(e.log, (es) => es.length >= 8, 'the 8 messages');
    expect(messageBodies(events)).toEqual(bodies);
    expect(second.status().detail?.['sync']).toMatchObject({ gapFills: 1, gapEvents: 5 });
  });

  it('re-reads a batch after a crash mid-batch: nothing twice, nothing missed', async () => {
    const e = await setup({ redis: true });
    const tokens = new AdapterStore(e.log.state, 'matrix:matrix').syncToken(RELAY);
    const first = await start(e);
    await waitFor(async () => (await tokens.get()) !== undefined, { timeoutMs: 10_000, what: 'the first sync token' });
    await first.stop();
    const saved = await tokens.get();
    expect(saved).toBeDefined();

    const bodies = ['batch 1', 'batch 2', 'batch 3'];
    for (const body of bodies) e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body });

    // The second event of the batch never becomes durable: the process "dies" while appending it.
    const real = createIngestSink({ log: e.log, logger: e.logger });
    let messages = 0;
    let hung = false;
    const hanging: IngestSink = {
      ...real,
      ingest: (draft, options) => {
        if (draft.kind === 'message' && ++messages === 2) {
          hung = true;
          return new Promise((resolve) => releases.push(() => resolve({ status: 'ignored', reason: 'released after the test' })));
        }
        return real.ingest(draft, options);
      },
    };
    const crashing = await startAdapter(e, botConfig(e), { sink: hanging });
    await waitFor(() => hung, { timeoutMs: 10_000, what: 'the batch to reach its second event' });
    await crashing.stop();
    expect(messageBodies(await roomEvents(e.log))).toEqual(['batch 1']);
    expect(await tokens.get()).toBe(saved);

    const restarted = await start(e);
    const events = await waitForEvents(e.log, (es) => es.length >= 3, 'the whole batch');
    expect(messageBodies(events)).toEqual(bodies);
    expect(new Set(events.map((ev) => ev.idem)).size).toBe(3);
    await waitFor(async () => (await tokens.get()) !== saved, { timeoutMs: 10_000, what: 'the token to move on' });
    expect(restarted.status().detail?.['inbound']).toMatchObject({ appended: 2, duplicate: 1 });
  });

  it('joins a linked room it is invited to later, and logs in with a fixed device so txn ids survive restarts', async () => {
    const e = await setup();
    const adapter = await start(e);
    const privateRoom = e.hs.createRoom(e.alice.userId, { preset: 'private_chat' });
    await e.log.rooms.put({ id: 'secret', links: [{ endpoint: 'matrix', target: privateRoom }] });
    await e.links.refresh();
    await waitFor(() => adapter.status().ready === false, { timeoutMs: 10_000, what: 'not ready: a linked room is not joined' });
    const early = await appendApi(e.log, { kind: 'message', content: { body: 'before the invite' } });
    expect(await new Driver(adapter, e.log, { endpoint: 'matrix', target: privateRoom }).deliver(early, 1)).toMatchObject({ status: 'retry' });
    e.hs.inviteUser(e.alice.userId, privateRoom, RELAY);
    await waitFor(() => adapter.status().ready, { timeoutMs: 10_000, what: 'joined after the invite' });
    expect(e.hs.joinedMembers(privateRoom)).toContain(RELAY);

    const event = await appendApi(e.log, { kind: 'message', content: { body: 'sent before a restart' } });
    const before = await new Driver(adapter, e.log, matrixLink(e)).deliver(event);
    await adapter.stop();
    const again = await start(e);
    // The same event delivered by the restarted process (new login, same device) is the same Matrix event.
    expect(await new Driver(again, e.log, matrixLink(e)).deliver(event)).toEqual(before);
    expect(messagesIn(e).filter((m) => m.content['body'] === '<Carol> sent before a restart')).toHaveLength(1);
  });
});

describe('Matrix adapter, bot mode, started again after a stop (a lease lost and won back)', () => {
  it('the same instance rejoins and syncs again like a new one: a message sent after the restart is ingested, and delivery works', async () => {
    const e = await setup();
    const adapter = await start(e);
    e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the stop' });
    await waitForEvents(e.log, (es) => es.length >= 1, 'the first message');
    await adapter.stop();
    expect(adapter.status().ready).toBe(false);

    // While another replica held the connection, the relay was removed from the room.
    e.hs.leaveRoom(RELAY, e.roomId);
    await adapter.start();
    await waitFor(() => e.hs.joinedMembers(e.roomId).includes(RELAY), { timeoutMs: 15_000, what: 'the relay to rejoin the linked room' });
    await waitFor(() => adapter.status().ready, { timeoutMs: 15_000, what: 'ready again after the restart' });
    e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'after the restart' });
    const events = await waitForEvents(e.log, (es) => es.length >= 2, 'the message sent after the restart in the log');
    expect(messageBodies(events)).toEqual(['before the stop', 'after the restart']);

    const out = await appendApi(e.log, { kind: 'message', content: { body: 'out after the restart' } });
    expect(await new Driver(adapter, e.log, matrixLink(e)).deliver(out)).toMatchObject({ status: 'delivered' });
    expect(messagesIn(e).filter((m) => m.content['body'] === '<Carol> out after the restart')).toHaveLength(1);
  });
});
