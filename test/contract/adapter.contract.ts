/**
 * The adapter contract: one suite, run against every adapter type of
 * src/runtime's descriptor list on its real server (Prosody, the Matrix
 * homeserver fake over HTTP, Mosquitto). Each adapter is built the way the
 * runtime builds it — through its descriptor's parseConfig and create — over
 * a memory log with the real ingest sink and room links, and reaches its
 * server through a proxy the test can cut.
 *
 * What every adapter does: start/stop (and start again as a new session),
 * deliver while its server is unreachable → retry (never delivered, never
 * rejected), then delivered once it is back; its own messages coming back are
 * dropped as echoes; status() has one shape; the same native message seen
 * twice is one event.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Adapter, AdapterStatus, DeliveryResult, IngestSink } from '../../src/core/adapter.js';
import type { AdapterDescriptor } from '../../src/core/descriptor.js';
import type { LogEvent } from '../../src/core/event.js';
import type { EventLog, RoomLink } from '../../src/core/ports.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../src/bridge/links.js';
import { contentInFormat } from '../../src/bridge/format/index.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { adapterDescriptor } from '../../src/runtime/adapter-list.js';
import { createSealedStore } from '../../src/runtime/sealed-store.js';
import { startCutProxy, type CutProxy } from '../harness/cut-proxy.js';
import { waitFor } from '../harness/free-port.js';
import { message } from '../fixtures/events.js';

export const DEADLINE_MS = 30_000;

export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = DEADLINE_MS): Promise<void> {
  await waitFor(check, { what, timeoutMs, intervalMs: 25 });
}

/** Somebody on the native side of the link (an XMPP occupant, a Matrix user, an MQTT device). */
export interface Peer {
  /** sends a native message with this text into the linked target */
  send(body: string): Promise<void>;
  /**
   * What the gateway delivered to the target as the peer saw it, in order:
   * the text, and the gateway event id the message carries natively (XMPP
   * origin-id, Matrix content key, MQTT `sg-eid`)
   */
  received(): ReadonlyArray<{ readonly body: string; readonly eventId: string | undefined }>;
}

/** What a contract test can do to the adapter under test. */
export interface Harness {
  readonly log: EventLog;
  readonly adapter: Adapter;
  /** how often the adapter handed the sink a draft with this body */
  ingested(body: string): number;
  /** waits until the log holds a message with this body */
  untilLogged(body: string): Promise<void>;
  /** stops the adapter, runs `between`, and starts a new instance built by the descriptor (a restarted gateway, same log and state) */
  restart(between?: () => Promise<void>): Promise<Adapter>;
}

/** One test's native world: a linked target on the server, a peer in it, and the adapter's config section. */
export interface World {
  /** the adapter's config section (without `type`), reaching the server at `serverUrl` */
  readonly config: Record<string, unknown>;
  readonly link: RoomLink;
  readonly peer: Peer;
  /** what the harness must do once an adapter has started (e.g. tell the homeserver where the application service listens) */
  afterStart?(adapter: Adapter): Promise<void>;
  /** hands `delivered` back to the adapter the way its protocol does (MUC reflection, own event in a transaction, a republication carrying our event id) */
  echo(delivered: LogEvent): Promise<void>;
  /** makes the adapter see one native message with `body` twice; resolves once it has (the proof is the target's) */
  sendTwice(body: string, harness: Harness): Promise<void>;
  close(): Promise<void>;
}

export interface AdapterContractTarget {
  /** the adapter type (its descriptor in src/runtime/adapter-list.ts) */
  readonly type: string;
  /** starts the file's server */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** the server's TCP port (the proxy forwards there) */
  port(): number;
  /** a fresh world for one test, in gateway room `room`, whose adapter reaches the server through `proxy` */
  world(room: string, proxy: CutProxy, log: EventLog): Promise<World>;
  /** the grants the adapter sees (adapters that admit people by them); default: none */
  readonly grants?: (user: string) => Promise<readonly string[]>;
}

let roomSeq = 0;

function bodyOf(e: LogEvent): string | undefined {
  return 'content' in e ? e.content.body : undefined;
}

async function roomBodies(log: EventLog, room: string): Promise<string[]> {
  const page = await log.read(undefined, { rooms: new Set([room]), limit: 1000 });
  return page.events.map(bodyOf).filter((b): b is string => b !== undefined);
}

/** A sink that counts the drafts it is handed, by body, and passes them on. */
function countingSink(inner: IngestSink): { sink: IngestSink; count(body: string): number } {
  const seen = new Map<string, number>();
  return {
    sink: {
      ingest(draft, options) {
        const body = 'content' in draft ? draft.content.body : undefined;
        if (body !== undefined) seen.set(body, (seen.get(body) ?? 0) + 1);
        return inner.ingest(draft, options);
      },
      ingestTelemetry: (d) => inner.ingestTelemetry(d),
      resolve: (r, k) => inner.resolve(r, k),
      getEvent: (r, e) => inner.getEvent(r, e),
    },
    count: (body) => seen.get(body) ?? 0,
  };
}

/** Calls deliver() as the delivery engine does (content in the adapter's text format), once. */
function deliverOnce(adapter: Adapter, event: LogEvent, link: RoomLink, attempt: number): Promise<DeliveryResult> {
  const content = contentInFormat(event, adapter.textFormat ?? 'plain');
  return adapter.deliver(event, { room: event.room, link }, { attempt, references: {}, ...(content ? { content } : {}) });
}

/** Retries like the delivery engine (honouring a short afterMs) until delivered or the deadline; returns every result. */
async function deliverUntilDone(adapter: Adapter, event: LogEvent, link: RoomLink, attempt = 0): Promise<DeliveryResult[]> {
  const results: DeliveryResult[] = [];
  const deadline = Date.now() + DEADLINE_MS;
  for (let n = attempt; ; n++) {
    const result = await deliverOnce(adapter, event, link, n);
    results.push(result);
    if (result.status !== 'retry' || Date.now() > deadline) return results;
    await new Promise((resolve) => setTimeout(resolve, Math.min(result.afterMs ?? 100, 500)));
  }
}

function expectStatusShape(status: AdapterStatus): void {
  expect(typeof status.connected).toBe('boolean');
  expect(typeof status.ready).toBe('boolean');
  // ready means connected and able to deliver
  if (status.ready) expect(status.connected).toBe(true);
  if (status.detail !== undefined) {
    expect(typeof status.detail).toBe('object');
    expect(Array.isArray(status.detail)).toBe(false);
    // the admin API serves it as JSON: nothing is lost on the way
    expect(JSON.parse(JSON.stringify(status.detail))).toEqual(status.detail);
  }
  for (const stat of status.ruleStats ?? []) {
    expect(typeof stat.rule).toBe('string');
    expect(typeof stat.stat).toBe('string');
    expect(Number.isFinite(stat.value)).toBe(true);
  }
}

export function adapterContract(target: AdapterContractTarget): void {
  describe(`adapter contract: ${target.type}`, () => {
    const descriptor = adapterDescriptor(target.type) as AdapterDescriptor;
    const cleanups: Array<() => Promise<void>> = [];

    beforeAll(async () => {
      expect(descriptor, `${target.type} is in src/runtime's descriptor list`).toBeDefined();
      await target.start();
    });
    afterAll(async () => target.stop());
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    });

    interface Setup {
      readonly world: World;
      readonly proxy: CutProxy;
      readonly room: string;
      readonly harness: Harness;
      /** the adapter now (restart() replaces it) */
      adapter(): Adapter;
      start(): Promise<void>;
    }

    async function setup(): Promise<Setup> {
      roomSeq++;
      const room = `contract${roomSeq}`;
      const log = createEventLog({ partitions: 4, log: silentLogger() });
      cleanups.push(() => log.close());
      const proxy = await startCutProxy({ port: target.port() });
      cleanups.push(() => proxy.close());
      const world = await target.world(room, proxy, log);
      cleanups.push(() => world.close());
      await log.rooms.put({ id: room, links: [world.link] });
      const links: RoomLinks = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
      cleanups.push(async () => links.close());
      const counting = countingSink(createIngestSink({ log, logger: silentLogger() }));
      const config = descriptor.parseConfig(world.config);
      const build = () => descriptor.create({ name: target.type, config, log: silentLogger(), sink: counting.sink, links, reader: log, state: log.state, sealed: (ns, secret) => createSealedStore(log.state, ns, secret), archive: log, grants: target.grants ?? (async () => []), contentIn: contentInFormat });
      let adapter = build();
      cleanups.push(() => adapter.stop());
      const start = async () => {
        await adapter.start();
        await world.afterStart?.(adapter);
        await until(() => adapter.status().ready, `${target.type} adapter ready`);
      };
      const harness: Harness = {
        log,
        get adapter() {
          return adapter;
        },
        ingested: (body) => counting.count(body),
        untilLogged: (body) => until(async () => (await roomBodies(log, room)).includes(body), `"${body}" in the log`),
        async restart(between) {
          await adapter.stop();
          await between?.();
          adapter = build();
          await start();
          return adapter;
        },
      };
      return { world, proxy, room, harness, adapter: () => adapter, start };
    }

    it('starts (ready, bridging), stops (not connected), and starts again as a new session', async () => {
      const s = await setup();
      expect(s.adapter().status().connected).toBe(false);
      await s.start();
      expect(s.adapter().status().connected).toBe(true);
      await s.world.peer.send('first session');
      await s.harness.untilLogged('first session');

      await s.adapter().stop();
      expect(s.adapter().status()).toMatchObject({ connected: false, ready: false });

      await s.start();
      await s.world.peer.send('second session');
      await s.harness.untilLogged('second session');
      expect(await roomBodies(s.harness.log, s.room)).toEqual(['first session', 'second session']);
    });

    it('has one status shape before start, while running and after stop', async () => {
      const s = await setup();
      expectStatusShape(s.adapter().status());
      await s.start();
      const running = s.adapter().status();
      expectStatusShape(running);
      expect(running).toMatchObject({ connected: true, ready: true });
      await s.adapter().stop();
      expectStatusShape(s.adapter().status());
    });

    it('answers retry while its server is unreachable — never delivered, never rejected — and delivers once it is back', async () => {
      const s = await setup();
      await s.start();
      const appended = await s.harness.log.append(message(s.room, 'sent while the server was away'));
      const event = (await s.harness.log.getEvent(s.room, appended.eventId)) as LogEvent;

      await s.proxy.cut();
      const whileDown = [await deliverOnce(s.adapter(), event, s.world.link, 0), await deliverOnce(s.adapter(), event, s.world.link, 1)];
      expect(whileDown.map((r) => r.status)).toEqual(['retry', 'retry']);

      await s.proxy.restore();
      const results = await deliverUntilDone(s.adapter(), event, s.world.link, 2);
      expect(results.at(-1)?.status).toBe('delivered');
      expect(results.slice(0, -1).every((r) => r.status === 'retry')).toBe(true);

      // Order per target is kept: once the next one is there, a duplicate of the first would be too.
      const nextAppended = await s.harness.log.append(message(s.room, 'after the outage'));
      const next = (await s.harness.log.getEvent(s.room, nextAppended.eventId)) as LogEvent;
      expect((await deliverUntilDone(s.adapter(), next, s.world.link)).at(-1)?.status).toBe('delivered');
      await until(() => s.world.peer.received().some((c) => c.body === 'after the outage'), 'the peer to see the next delivery');
      // At least once: a copy in flight when the connection dropped may arrive besides the retried one
      // (a QoS 1 re-send, an XEP-0198 resend); every copy names the event, which is how a receiver takes it once.
      const copies = s.world.peer.received().filter((c) => c.body === 'sent while the server was away');
      expect(copies.length).toBeGreaterThanOrEqual(1);
      expect(copies.map((c) => c.eventId)).toEqual(copies.map(() => event.eventId));
    });

    it('drops its own messages when they come back (echo), and still bridges the next native message', async () => {
      const s = await setup();
      await s.start();
      const appended = await s.harness.log.append(message(s.room, 'from the API'));
      const event = (await s.harness.log.getEvent(s.room, appended.eventId)) as LogEvent;
      expect((await deliverUntilDone(s.adapter(), event, s.world.link)).at(-1)?.status).toBe('delivered');
      await until(() => s.world.peer.received().some((c) => c.body === 'from the API' && c.eventId === event.eventId), 'the peer to see the delivery');
      await s.world.echo(event);

      await s.world.peer.send('native after the echo');
      await s.harness.untilLogged('native after the echo');
      expect(await roomBodies(s.harness.log, s.room)).toEqual(['from the API', 'native after the echo']);
    });

    it('appends one event for a native message it sees twice (ingest is idempotent)', async () => {
      const s = await setup();
      await s.start();
      await s.world.peer.send('warm-up');
      await s.harness.untilLogged('warm-up');

      await s.world.sendTwice('seen twice', s.harness);
      expect(s.harness.ingested('seen twice')).toBeGreaterThanOrEqual(1);
      await s.world.peer.send('marker');
      await s.harness.untilLogged('marker');
      expect(await roomBodies(s.harness.log, s.room)).toEqual(['warm-up', 'seen twice', 'marker']);
    });
  });
}
