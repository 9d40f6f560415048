/**
 * Matrix end-to-end encryption benchmark (issue 22): one bot-mode adapter
 * (crypto on, state sealed in Redis) linked to a clear room and an encrypted
 * room, with a member whose client is the Rust-crypto test peer; measured in
 * the same run, the clear room being the baseline:
 * - send: deliver() of N messages, one after the other (encrypted: Megolm
 *   encrypt + the sealed-store write, the room key shared once);
 * - receive: N messages waiting on the homeserver, caught up by the
 *   restarted adapter (encrypted: the room key from to-device, then Megolm
 *   decrypt per event);
 * - live receive latency: one message at a time, from the homeserver
 *   accepting it to its append in the log (p50/p99).
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import type { LogEvent } from '../../src/core/event.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createSealedStore } from '../../src/runtime/sealed-store.js';
import { createMatrixAdapter, type MatrixAdapter } from '../../adapters/matrix/index.js';
import { parseMatrixConfig } from '../../adapters/matrix/config.js';
import { createFakeHomeserver } from '../harness/fake-homeserver.js';
import { E2eePeer } from '../harness/matrix-e2ee-peer.js';
import { testPrefix, dropPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const BODY = 'The pump in building 7 reported a pressure drop; maintenance is on the way.';

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export const benchMatrixE2ee: Bench = async ({ redisUrl, quick }) => {
  const n = quick ? 20 : 200;
  const live = quick ? 10 : 50;
  const hs = await createFakeHomeserver({ serverName: 'bench.test' });
  const prefix = testPrefix('bench-mxe2ee');
  const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: redisUrl, prefix }, retention: { roomMaxLen: 0 } });
  const admin = new Redis(redisUrl);
  const rows: BenchRow[] = [];
  let peer: E2eePeer | undefined;
  let adapter: MatrixAdapter | undefined;
  try {
    const alice = hs.registerUser('alice', 'pw');
    hs.registerUser('relay', 'relay-pw');
    const clearRoom = hs.createRoom(alice.userId, { preset: 'public_chat' });
    const encRoom = hs.createRoom(alice.userId, { preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    await log.rooms.put({ id: 'clear', links: [{ endpoint: 'matrix', target: clearRoom }] });
    await log.rooms.put({ id: 'enc', links: [{ endpoint: 'matrix', target: encRoom }] });
    const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
    const config = parseMatrixConfig({
      mode: 'bot',
      homeserverUrl: hs.url,
      serverName: hs.serverName,
      bot: { userId: '@relay:bench.test', password: 'relay-pw', syncTimeoutMs: 5_000 },
      encryption: { storeSecret: 'bench store secret 0123456789' },
    });
    const start = async (): Promise<MatrixAdapter> => {
      const a = createMatrixAdapter({
        name: 'matrix',
        config,
        log: silentLogger(),
        sink: createIngestSink({ log, logger: silentLogger() }),
        links,
        state: log.state,
        sealed: (ns, secret) => createSealedStore(log.state, ns, secret),
      });
      await a.start();
      await until(() => Promise.resolve(a.status().ready), 'the adapter ready');
      return a;
    };
    adapter = await start();
    peer = await E2eePeer.login(hs.url, alice.userId, 'pw', 'ALICE');
    await peer.sync();
    const newest = async (room: string): Promise<string | undefined> => {
      const [last] = (await log.roomHistory(room, { dir: 'b', limit: 1 })).events;
      return last && 'content' in last ? last.content.body : undefined;
    };
    let seq = 0;
    const draft = async (room: string): Promise<LogEvent> => {
      seq++;
      const { eventId } = await log.append({
        v: 1,
        idem: `api:bench:${room}-${seq}`,
        room,
        sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
        origin: { proto: 'api', via: 'api', ids: {} },
        ts: { received: Date.now() },
        kind: 'message',
        content: { body: `${BODY} #${seq}` },
      });
      const event = await log.getEvent(room, eventId);
      if (!event) throw new Error('not appended');
      return event;
    };

    // ---- send
    const send = async (room: string, target: string): Promise<{ perSec: number; latencies: number[] }> => {
      const a = adapter;
      if (!a) throw new Error('no adapter');
      const events: LogEvent[] = [];
      for (let i = 0; i < n; i++) events.push(await draft(room));
      // warm-up: the first encrypted send shares the room key (one Olm session, one to-device)
      const warm = await draft(room);
      await a.deliver(warm, { room, link: { endpoint: 'matrix', target } }, { attempt: 0, references: {} });
      const latencies: number[] = [];
      const t0 = performance.now();
      for (const ev of events) {
        const s0 = performance.now();
        const r = await a.deliver(ev, { room, link: { endpoint: 'matrix', target } }, { attempt: 0, references: {} });
        if (r.status !== 'delivered') throw new Error(`delivery ${r.status}: ${'reason' in r ? r.reason : ''}`);
        latencies.push(performance.now() - s0);
      }
      return { perSec: n / ((performance.now() - t0) / 1000), latencies: latencies.sort((x, y) => x - y) };
    };
    const clearSend = await send('clear', clearRoom);
    const encSend = await send('enc', encRoom);
    rows.push({ name: `send ${n} messages, encrypted room vs clear room`, value: encSend.perSec, unit: 'msgs/s', baseline: clearSend.perSec, ratio: encSend.perSec / clearSend.perSec, note: 'deliver() one after the other; Megolm encrypt + sealed-store write per message' });
    for (const p of [50, 99]) {
      const value = percentile(encSend.latencies, p);
      const baseline = percentile(clearSend.latencies, p);
      rows.push({ name: `send latency p${p}, encrypted vs clear`, value, unit: 'ms', baseline, ratio: value / baseline });
    }

    // ---- catch-up receive: messages waiting on the homeserver while the adapter is down
    const receive = async (room: string, sendOne: (i: number) => Promise<void>): Promise<number> => {
      await adapter?.stop();
      adapter = undefined;
      for (let i = 0; i < n; i++) await sendOne(i);
      const t0 = performance.now();
      adapter = await start();
      await until(async () => (await newest(room)) === `${BODY} in ${n - 1}`, `${n} messages in ${room}`);
      return n / ((performance.now() - t0) / 1000);
    };
    const p = peer;
    const clearRecv = await receive('clear', async (i) => {
      hs.sendAsUser(alice.userId, clearRoom, 'm.room.message', { msgtype: 'm.text', body: `${BODY} in ${i}` });
      return Promise.resolve();
    });
    const encRecv = await receive('enc', async (i) => {
      await p.sendEncrypted(encRoom, 'm.room.message', { msgtype: 'm.text', body: `${BODY} in ${i}` });
    });
    rows.push({ name: `receive ${n} waiting messages after a restart, encrypted vs clear`, value: encRecv, unit: 'msgs/s', baseline: clearRecv, ratio: encRecv / clearRecv, note: 'from start() to all appended: crypto restore, to-device room key, Megolm decrypt' });

    // ---- live receive latency
    const liveLatency = async (room: string, sendOne: (i: number) => Promise<void>): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < live; i++) {
        const t0 = performance.now();
        await sendOne(i);
        await until(async () => (await newest(room)) === `${BODY} live ${i}`, 'a live message');
        out.push(performance.now() - t0);
      }
      return out.sort((x, y) => x - y);
    };
    const clearLive = await liveLatency('clear', (i) => {
      hs.sendAsUser(alice.userId, clearRoom, 'm.room.message', { msgtype: 'm.text', body: `${BODY} live ${i}` });
      return Promise.resolve();
    });
    // The peer encrypts first (not the bridge's cost): time from the homeserver accepting it.
    const encLive: number[] = [];
    for (let i = 0; i < live; i++) {
      const content = await p.encrypt(encRoom, 'm.room.message', { msgtype: 'm.text', body: `${BODY} live ${i}` });
      const t0 = performance.now();
      await p.putEncrypted(encRoom, content);
      await until(async () => (await newest('enc')) === `${BODY} live ${i}`, 'a live encrypted message');
      encLive.push(performance.now() - t0);
    }
    encLive.sort((x, y) => x - y);
    for (const q of [50, 99]) {
      const value = percentile(encLive, q);
      const baseline = percentile(clearLive, q);
      rows.push({ name: `live receive latency p${q}, encrypted vs clear`, value, unit: 'ms', baseline, ratio: value / baseline, note: 'homeserver accepted → appended (sync long-poll wake-up included)' });
    }
    links.close();
  } finally {
    await adapter?.stop();
    peer?.close();
    await log.close();
    await dropPrefix(admin, prefix);
    admin.disconnect();
    await hs.stop();
  }
  return { title: 'Matrix end-to-end encryption (issue 22): encrypted vs clear room, bot mode', rows };
};
