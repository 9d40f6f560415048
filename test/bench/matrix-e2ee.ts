/**
 * Matrix end-to-end encryption benchmark (issue 22), in bot mode and in
 * appservice mode: one adapter per mode (crypto on, state sealed in Redis)
 * linked to a clear room and an encrypted room, with a member whose client
 * is the Rust-crypto test peer; measured in the same run, the clear room
 * being the baseline:
 * - send: deliver() of N messages, one after the other (encrypted: Megolm
 *   encrypt + the sealed-store writes, the room key shared once), with the
 *   bytes and atomic writes the crypto store put into Redis per message;
 * - receive: bot mode, N messages waiting on the homeserver, caught up by
 *   the restarted adapter (encrypted: the room key from to-device, then
 *   Megolm decrypt per event); appservice mode, N messages sent at once
 *   while the adapter runs (the homeserver's transactions);
 * - live receive latency: one message at a time, from the homeserver
 *   accepting it to its append in the log (p50/p99).
 */
import { performance } from 'node:perf_hooks';
import { parse } from 'yaml';
import { Redis } from 'ioredis';
import type { LogEvent } from '../../src/core/event.js';
import type { StateStore } from '../../src/core/ports.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createSealedStore } from '../../src/runtime/sealed-store.js';
import { createMatrixAdapter, registrationYaml, type MatrixAdapter } from '../../adapters/matrix/index.js';
import { parseMatrixConfig } from '../../adapters/matrix/config.js';
import { createFakeHomeserver, type AppServiceRegistration } from '../harness/fake-homeserver.js';
import { E2eePeer } from '../harness/matrix-e2ee-peer.js';
import { testPrefix, dropPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchContext, type BenchRow } from './report.js';

const BODY = 'The pump in building 7 reported a pressure drop; maintenance is on the way.';
const CRYPTO_NS = 'matrix-crypto:';

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The state store, counting what is written to the crypto store's namespaces (bytes as stored: sealed, base64). */
function counting(state: StateStore): { state: StateStore; bytes: () => number; writes: () => number } {
  let bytes = 0;
  let writes = 0;
  const note = (ns: string, values: readonly string[]): void => {
    if (!ns.startsWith(CRYPTO_NS)) return;
    writes++;
    for (const v of values) bytes += Buffer.byteLength(v);
  };
  const wrapped: StateStore = {
    get: (ns, k) => state.get(ns, k),
    set: (ns, k, v) => {
      note(ns, [k, v]);
      return state.set(ns, k, v);
    },
    setIfAbsent: (ns, k, v) => {
      note(ns, [k, v]);
      return state.setIfAbsent(ns, k, v);
    },
    delete: (ns, k) => state.delete(ns, k),
    entries: (ns) => state.entries(ns),
    advance: (ns, k, v) => state.advance(ns, k, v),
    update: (ns, set, del) => {
      note(ns, [...set.flat(), ...del]);
      return state.update(ns, set, del);
    },
    fencedUpdate: (ns, token, set, del) => {
      note(ns, [...set.flat(), ...del]);
      return state.fencedUpdate(ns, token, set, del);
    },
  };
  return { state: wrapped, bytes: () => bytes, writes: () => writes };
}

type Mode = 'bot' | 'appservice';

async function benchMode(mode: Mode, { redisUrl, quick }: BenchContext): Promise<BenchRow[]> {
  const n = quick ? 20 : 200;
  const live = quick ? 10 : 50;
  const hs = await createFakeHomeserver({ serverName: 'bench.test', ...(mode === 'appservice' ? { msc2409ToDevice: true, msc3202TransactionExtensions: true } : {}) });
  const prefix = testPrefix(`bench-mxe2ee-${mode}`);
  const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: redisUrl, prefix }, retention: { roomMaxLen: 0 } });
  const counted = counting(log.state);
  const admin = new Redis(redisUrl);
  const rows: BenchRow[] = [];
  let peer: E2eePeer | undefined;
  let adapter: MatrixAdapter | undefined;
  try {
    const alice = hs.registerUser('alice', 'pw');
    if (mode === 'bot') hs.registerUser('relay', 'relay-pw');
    const clearRoom = hs.createRoom(alice.userId, { preset: 'public_chat' });
    const encRoom = hs.createRoom(alice.userId, { preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    await log.rooms.put({ id: 'clear', links: [{ endpoint: 'matrix', target: clearRoom }] });
    await log.rooms.put({ id: 'enc', links: [{ endpoint: 'matrix', target: encRoom }] });
    const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
    const encryption = { storeSecret: 'bench store secret 0123456789' };
    const config =
      mode === 'bot'
        ? parseMatrixConfig({ mode: 'bot', homeserverUrl: hs.url, serverName: hs.serverName, bot: { userId: '@relay:bench.test', password: 'relay-pw', syncTimeoutMs: 5_000 }, encryption })
        : parseMatrixConfig({
            mode: 'appservice',
            homeserverUrl: hs.url,
            serverName: hs.serverName,
            appservice: { asToken: 'bench-as-token-0123456789', hsToken: 'bench-hs-token-0123456789', url: 'http://127.0.0.1:9', listenHost: '127.0.0.1', listenPort: 0 },
            encryption,
          });
    if (mode === 'appservice') {
      const reg = parse(registrationYaml(config)) as AppServiceRegistration;
      hs.registerAppService({ ...reg, url: null });
    }
    const start = async (): Promise<MatrixAdapter> => {
      const a = createMatrixAdapter({
        name: 'matrix',
        config,
        log: silentLogger(),
        sink: createIngestSink({ log, logger: silentLogger() }),
        links,
        state: counted.state,
        sealed: (ns, secret) => createSealedStore(counted.state, ns, secret),
      });
      await a.start();
      const address = a.listenAddress();
      if (mode === 'appservice') {
        if (!address) throw new Error('no application-service listener');
        hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${address.port}`);
      }
      await until(() => Promise.resolve(a.status().ready && (a.status().detail?.['encryption'] as { active?: boolean } | undefined)?.active === true), 'the adapter ready with its crypto active');
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
    const send = async (room: string, target: string): Promise<{ perSec: number; latencies: number[]; bytes: number; writes: number }> => {
      const a = adapter;
      if (!a) throw new Error('no adapter');
      const events: LogEvent[] = [];
      for (let i = 0; i < n; i++) events.push(await draft(room));
      // warm-up: the first encrypted send shares the room key (one Olm session, one to-device); the first clear one in appservice mode registers the ghost
      const warm = await draft(room);
      await a.deliver(warm, { room, link: { endpoint: 'matrix', target } }, { attempt: 0, references: {} });
      const latencies: number[] = [];
      const [bytes0, writes0] = [counted.bytes(), counted.writes()];
      const t0 = performance.now();
      for (const ev of events) {
        const s0 = performance.now();
        const r = await a.deliver(ev, { room, link: { endpoint: 'matrix', target } }, { attempt: 0, references: {} });
        if (r.status !== 'delivered') throw new Error(`delivery ${r.status}: ${'reason' in r ? r.reason : ''}`);
        latencies.push(performance.now() - s0);
      }
      return { perSec: n / ((performance.now() - t0) / 1000), latencies: latencies.sort((x, y) => x - y), bytes: (counted.bytes() - bytes0) / n, writes: (counted.writes() - writes0) / n };
    };
    const clearSend = await send('clear', clearRoom);
    const encSend = await send('enc', encRoom);
    rows.push({ name: `${mode}: send ${n} messages, encrypted room vs clear room`, value: encSend.perSec, unit: 'msgs/s', baseline: clearSend.perSec, ratio: encSend.perSec / clearSend.perSec, note: 'deliver() one after the other; Megolm encrypt + crypto-store writes per message' });
    for (const p of [50, 99]) {
      const value = percentile(encSend.latencies, p);
      const baseline = percentile(clearSend.latencies, p);
      rows.push({ name: `${mode}: send latency p${p}, encrypted vs clear`, value, unit: 'ms', baseline, ratio: value / baseline });
    }
    rows.push({ name: `${mode}: crypto-store bytes written to Redis per encrypted send`, value: encSend.bytes, unit: 'bytes', note: 'sealed values and field names, as stored' });
    rows.push({ name: `${mode}: crypto-store writes per encrypted send`, value: encSend.writes, unit: 'writes', note: 'each an atomic Redis write (HSET or MULTI)' });

    const p = peer;
    const sendClear = (body: string): Promise<void> => {
      hs.sendAsUser(alice.userId, clearRoom, 'm.room.message', { msgtype: 'm.text', body });
      return Promise.resolve();
    };
    const sendEnc = (body: string): Promise<unknown> => p.sendEncrypted(encRoom, 'm.room.message', { msgtype: 'm.text', body });
    if (mode === 'bot') {
      // ---- catch-up receive: messages waiting on the homeserver while the adapter is down
      const receive = async (room: string, sendOne: (body: string) => Promise<unknown>): Promise<number> => {
        await adapter?.stop();
        adapter = undefined;
        for (let i = 0; i < n; i++) await sendOne(`${BODY} in ${i}`);
        const t0 = performance.now();
        adapter = await start();
        await until(async () => (await newest(room)) === `${BODY} in ${n - 1}`, `${n} messages in ${room}`);
        return n / ((performance.now() - t0) / 1000);
      };
      const clearRecv = await receive('clear', sendClear);
      const encRecv = await receive('enc', sendEnc);
      rows.push({ name: `bot: receive ${n} waiting messages after a restart, encrypted vs clear`, value: encRecv, unit: 'msgs/s', baseline: clearRecv, ratio: encRecv / clearRecv, note: 'from start() to all appended: crypto restore, to-device room key, Megolm decrypt' });
    } else {
      // ---- burst receive: N messages put on the homeserver at once, pushed in transactions
      const burst = async (room: string, prepare: (body: string) => Promise<() => Promise<unknown>>): Promise<number> => {
        const puts: Array<() => Promise<unknown>> = [];
        for (let i = 0; i < n; i++) puts.push(await prepare(`${BODY} burst ${i}`));
        const t0 = performance.now();
        for (const put of puts) await put();
        await until(async () => (await newest(room)) === `${BODY} burst ${n - 1}`, `${n} messages in ${room}`);
        return n / ((performance.now() - t0) / 1000);
      };
      const clearRecv = await burst('clear', (body) => Promise.resolve(() => sendClear(body)));
      // The peer encrypts beforehand (not the bridge's cost).
      const encRecv = await burst('enc', async (body) => {
        const content = await p.encrypt(encRoom, 'm.room.message', { msgtype: 'm.text', body });
        return () => p.putEncrypted(encRoom, content);
      });
      rows.push({ name: `appservice: receive ${n} messages sent at once, encrypted vs clear`, value: encRecv, unit: 'msgs/s', baseline: clearRecv, ratio: encRecv / clearRecv, note: 'first put → all appended: transactions, Megolm decrypt' });
    }

    // ---- live receive latency
    const liveLatency = async (room: string, prepare: (body: string) => Promise<() => Promise<unknown>>): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < live; i++) {
        const put = await prepare(`${BODY} live ${i}`);
        const t0 = performance.now();
        await put();
        await until(async () => (await newest(room)) === `${BODY} live ${i}`, 'a live message');
        out.push(performance.now() - t0);
      }
      return out.sort((x, y) => x - y);
    };
    const clearLive = await liveLatency('clear', (body) => Promise.resolve(() => sendClear(body)));
    // The peer encrypts first (not the bridge's cost): time from the homeserver accepting it.
    const encLive = await liveLatency('enc', async (body) => {
      const content = await p.encrypt(encRoom, 'm.room.message', { msgtype: 'm.text', body });
      return () => p.putEncrypted(encRoom, content);
    });
    for (const q of [50, 99]) {
      const value = percentile(encLive, q);
      const baseline = percentile(clearLive, q);
      rows.push({ name: `${mode}: live receive latency p${q}, encrypted vs clear`, value, unit: 'ms', baseline, ratio: value / baseline, note: mode === 'bot' ? 'homeserver accepted → appended (sync long-poll wake-up included)' : 'homeserver accepted → appended (transaction push included)' });
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
  return rows;
}

export const benchMatrixE2ee: Bench = async (ctx) => {
  const rows = [...(await benchMode('bot', ctx)), ...(await benchMode('appservice', ctx))];
  return { title: 'Matrix end-to-end encryption (issue 22): encrypted vs clear room, bot mode and appservice mode', rows };
};
