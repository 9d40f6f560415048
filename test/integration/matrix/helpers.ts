/**
 * Shared set-up for the Matrix adapter's integration tests: the homeserver
 * fake, the real sink and links over a memory (or Redis) log, an adapter in
 * either mode, and a small driver that calls deliver() the way the delivery
 * engine does (references from origin ids or from recorded deliveries,
 * retry after the asked wait, native ids recorded as aliases).
 */
import { pino, type Logger } from 'pino';
import { parse } from 'yaml';
import { nativeKey, type DeliveryResult, type IngestSink, type ReferenceIds } from '../../../src/core/adapter.js';
import type { EventDraft, LogEvent, Relations, Sender } from '../../../src/core/event.js';
import type { EventLog, RoomLink } from '../../../src/core/ports.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../../src/bridge/links.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { createMatrixAdapter, type MatrixAdapter } from '../../../adapters/matrix/index.js';
import { parseMatrixConfig, registrationYaml, type MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import { memoryMatrixState, type MatrixState } from '../../../adapters/matrix/store.js';
import { createFakeHomeserver, type AppServiceRegistration, type FakeHomeserver, type FakeHomeserverOptions, type RegisteredUser } from '../../harness/fake-homeserver.js';
import { waitFor } from '../../harness/free-port.js';

export const ROOM = 'lobby';
export const AS_TOKEN = 'as-token-0123456789abcdef';
export const HS_TOKEN = 'hs-token-0123456789abcdef';

export interface LogLine {
  level: number;
  msg: string;
  reason?: string;
  [key: string]: unknown;
}

export interface Env {
  readonly hs: FakeHomeserver;
  readonly log: EventLog;
  readonly links: RoomLinks;
  readonly logger: Logger;
  readonly lines: LogLine[];
  readonly alice: RegisteredUser;
  readonly bob: RegisteredUser;
  /** the Matrix room linked to ROOM */
  readonly roomId: string;
  readonly state: MatrixState;
  close(): Promise<void>;
}

export async function createEnv(opts: { redis?: { url: string; prefix: string }; hs?: FakeHomeserverOptions; persistentState?: boolean } = {}): Promise<Env> {
  const hs = await createFakeHomeserver({ serverName: 'fake.test', appServiceRetry: { initialMs: 50, maxMs: 500 }, ...opts.hs });
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const log = createEventLog({ partitions: 4, log: logger.child({ module: 'eventlog' }), ...(opts.redis ? { redis: opts.redis } : {}) });
  const alice = hs.registerUser('alice', 'pw');
  const bob = hs.registerUser('bob', 'pw');
  const roomId = hs.createRoom(alice.userId, { name: 'Lobby' });
  hs.joinRoom(bob.userId, roomId);
  // Bob may redact others' messages (a moderator).
  hs.sendStateAsUser(alice.userId, roomId, 'm.room.power_levels', '', {
    users: { [alice.userId]: 100, [bob.userId]: 50 },
    users_default: 0,
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: 0,
  });
  const links = await createRoomLinks({ rooms: log.rooms, logger });
  await log.rooms.put({ id: ROOM, links: [{ endpoint: 'matrix', target: roomId }] });
  await links.refresh();
  const state = opts.redis ? log.state : memoryMatrixState();
  return {
    hs,
    log,
    links,
    logger,
    lines,
    alice,
    bob,
    roomId,
    state,
    async close() {
      links.close();
      await log.close();
      await hs.stop();
    },
  };
}

export function appserviceConfig(env: Env, overrides: Record<string, unknown> = {}, top: Record<string, unknown> = {}): MatrixAdapterConfig {
  return parseMatrixConfig({
    ...top,
    mode: 'appservice',
    homeserverUrl: env.hs.url,
    serverName: env.hs.serverName,
    requestTimeoutMs: 10_000,
    stopGraceMs: 300,
    appservice: { asToken: AS_TOKEN, hsToken: HS_TOKEN, url: 'http://127.0.0.1:9', listenHost: '127.0.0.1', listenPort: 0, ...overrides },
  });
}

export function botConfig(env: Env, overrides: Record<string, unknown> = {}, top: Record<string, unknown> = {}): MatrixAdapterConfig {
  return parseMatrixConfig({
    ...top,
    mode: 'bot',
    homeserverUrl: env.hs.url,
    serverName: env.hs.serverName,
    requestTimeoutMs: 10_000,
    stopGraceMs: 300,
    bot: { userId: '@relay:fake.test', password: 'relay-pw', syncTimeoutMs: 2_000, ...overrides },
  });
}

/** Registers the application service at the fake from our own registration file (what the CLI writes). */
export function registerAppservice(env: Env, config: MatrixAdapterConfig, hsToken?: string): AppServiceRegistration {
  const reg = parse(registrationYaml(config)) as AppServiceRegistration;
  env.hs.registerAppService({ ...reg, url: null, ...(hsToken !== undefined ? { hs_token: hsToken } : {}) });
  return reg;
}

export async function startAdapter(env: Env, config: MatrixAdapterConfig, opts: { sink?: IngestSink; state?: MatrixState } = {}): Promise<MatrixAdapter> {
  const adapter = createMatrixAdapter({
    name: 'matrix',
    config,
    log: env.logger.child({ adapter: 'matrix' }),
    sink: opts.sink ?? createIngestSink({ log: env.log, logger: env.logger }),
    links: env.links,
    state: opts.state ?? env.state,
  });
  await adapter.start();
  if (config.mode === 'appservice') {
    const address = adapter.listenAddress();
    if (!address) throw new Error('no listener');
    env.hs.setAppServiceUrl(config.appservice?.id ?? 'syncgate', `http://127.0.0.1:${address.port}`);
  }
  return adapter;
}

export async function roomEvents(log: EventLog, room = ROOM): Promise<LogEvent[]> {
  return (await log.read(undefined, { rooms: new Set([room]), limit: 1000 })).events;
}

export async function waitForEvents(log: EventLog, predicate: (events: LogEvent[]) => boolean, what: string, timeoutMs = 15_000): Promise<LogEvent[]> {
  let last: LogEvent[] = [];
  try {
    await waitFor(
      async () => {
        last = await roomEvents(log);
        return predicate(last);
      },
      { timeoutMs, what },
    );
  } catch (err) {
    const seen = last.map((e) => `${e.kind}:${e.origin.ids['mx.eventId'] ?? e.eventId}`).join(', ');
    throw new Error(`${(err as Error).message}; the log has: ${seen}`);
  }
  return last;
}

/** Every pushed transaction answered 200 (so every echo was seen). */
export async function waitForTransactions(env: Env, id = 'syncgate'): Promise<void> {
  await waitFor(() => env.hs.appServiceTransactions(id).every((t) => t.delivered), { timeoutMs: 15_000, what: 'all AS transactions delivered' });
}

export function messagesIn(env: Env): Array<{ event_id: string; sender: string; content: Record<string, unknown>; txn?: unknown; type: string }> {
  return env.hs
    .events(env.roomId, { includeTransactionIds: true })
    .filter((e) => e.type === 'm.room.message' || e.type === 'm.reaction' || e.type === 'm.room.redaction')
    .map((e) => ({ event_id: e.event_id, sender: e.sender, content: e.content, txn: e.unsigned['transaction_id'], type: e.type }));
}

let apiCounter = 0;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type ApiDraft = DistributiveOmit<Exclude<EventDraft, { kind: 'telemetry' }>, 'v' | 'idem' | 'room' | 'sender' | 'origin' | 'ts'> & { sender?: Sender };

/** What the HTTP API appends: an event from a device. */
export async function appendApi(log: EventLog, draft: ApiDraft): Promise<LogEvent> {
  apiCounter++;
  const full: EventDraft = {
    v: 1,
    idem: `api:dev1:t${process.pid}-${apiCounter}-${Date.now()}`,
    room: ROOM,
    sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: { 'api.txnId': `t${apiCounter}` } },
    ts: { received: Date.now() },
    ...draft,
  };
  const { eventId } = await log.append(full);
  const event = await log.getEvent(ROOM, eventId);
  if (!event) throw new Error('appended event not found');
  return event;
}

export interface Attempt {
  readonly at: number;
  readonly result: DeliveryResult;
}

/** Calls deliver() like the delivery engine: references, retries after the asked wait, records native ids. */
export class Driver {
  readonly attempts: Attempt[] = [];
  private readonly delivered = new Map<string, Record<string, string>>();

  constructor(
    private readonly adapter: MatrixAdapter,
    private readonly log: EventLog,
    private readonly link: RoomLink,
  ) {}

  async references(event: LogEvent): Promise<ReferenceIds> {
    const rel = 'rel' in event && event.rel ? (event.rel as Relations) : {};
    const out: ReferenceIds = {};
    for (const [name, target] of Object.entries(rel) as Array<[keyof Relations, string | undefined]>) {
      if (!target) continue;
      const original = await this.log.getEvent(event.room, target);
      if (!original) continue;
      const ids = original.origin.via === this.adapter.name ? original.origin.ids : this.delivered.get(target);
      if (ids) out[name] = ids;
    }
    return out;
  }

  /** Delivers, retrying up to `maxAttempts`; returns the last result (a `retry` when they ran out). */
  async deliver(event: LogEvent, maxAttempts = 10): Promise<DeliveryResult> {
    let last: DeliveryResult | undefined;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const result = await this.adapter.deliver(event, { room: event.room, link: this.link }, { attempt, references: await this.references(event) });
      this.attempts.push({ at: Date.now(), result });
      if (result.status === 'delivered') {
        if (Object.keys(result.nativeIds).length > 0) this.delivered.set(event.eventId, { ...result.nativeIds });
        const keys = Object.entries(result.nativeIds).map(([k, v]) => nativeKey('matrix', k, v));
        if (keys.length > 0) await this.log.alias(event.room, event.eventId, keys);
        return result;
      }
      if (result.status !== 'retry') return result;
      last = result;
      // Honour the wait the adapter passed on (the homeserver's Retry-After): this is the engine's job.
      if (attempt + 1 < maxAttempts) await new Promise((resolve) => setTimeout(resolve, result.afterMs ?? 100));
    }
    if (!last) throw new Error('no attempt made');
    return last;
  }

  nativeIds(eventId: string): Record<string, string> | undefined {
    return this.delivered.get(eventId);
  }
}

export function matrixLink(env: Env): RoomLink {
  return { endpoint: 'matrix', target: env.roomId };
}

export function reasons(lines: LogLine[]): string[] {
  return lines.map((l) => l.reason).filter((r): r is string => typeof r === 'string');
}
