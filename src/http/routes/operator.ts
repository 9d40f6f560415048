/**
 * What the operator's console (and `syncgate` / curl) reads: a room's
 * timeline with each link's delivery state, one event traced to every
 * delivery, the delivery lag per adapter, and an MQTT rule tried on a sample.
 * Viewer tokens may call all of these (they change nothing).
 *
 * Delivery state is derived, never scanned for: the delivery record of each
 * (event, endpoint) (written when the protocol confirmed it), the retry
 * notes (one per room that is retrying now), and the dead-letter streams.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { traceKeys } from '../../core/adapter.js';
import type { LogEvent } from '../../core/event.js';
import { SyncgateError } from '../../core/errors.js';
import type { DeadLetter, DeliveryRecord, EventLog, RoomLink, RetryNote } from '../../core/ports.js';
import { adminAuth, adminOf } from '../auth.js';
import { devicePositions } from '../device-lag.js';
import type { HttpContext } from '../context.js';
import { RoomParams, errors } from '../schemas.js';

const security = [{ bearer: [] }];
const tags = ['admin'];
const adminErrors = (...extra: number[]) => errors(400, 401, 403, ...extra);

export const DELIVERY_STATES = ['delivered', 'pending', 'retrying', 'dead-lettered', 'discarded', 'origin'] as const;

/** the state-store namespace where a discarded dead letter is remembered (room, event, endpoint → when and by whom) */
export const DISCARDED_NS = 'delivery:discarded';
export const discardedKey = (room: string, eventId: string, endpoint: string) => `${room}\u0000${eventId}\u0000${endpoint}`;
export type DeliveryStateName = (typeof DELIVERY_STATES)[number];

const Delivery = Type.Object({
  endpoint: Type.String(),
  target: Type.String(),
  state: Type.Union(DELIVERY_STATES.map((s) => Type.Literal(s)), {
    description: '`delivered` (confirmed by the protocol), `pending` (not delivered yet, e.g. the adapter is disconnected), `retrying` (failed, tried again at `nextAt`), `dead-lettered` (gave up), `discarded` (a dead letter an operator discarded), `origin` (the event came from this endpoint)',
  }),
  nativeIds: Type.Optional(Type.Record(Type.String(), Type.String())),
  at: Type.Optional(Type.Integer({ description: 'when the delivery was confirmed, or the last attempt failed (ms)' })),
  attempt: Type.Optional(Type.Integer()),
  nextAt: Type.Optional(Type.Integer()),
  error: Type.Optional(Type.String()),
  deadLetter: Type.Optional(Type.String({ description: 'the dead letter id (for replay / drop)' })),
});
export type DeliveryView = Static<typeof Delivery>;

const TimelineEntry = Type.Object({ event: Type.Unknown({ description: 'the log event, as stored' }), deliveries: Type.Array(Delivery) });
const TimelineQuery = Type.Object(
  {
    from: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'the `next` of the previous page' })),
    limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
  },
  { additionalProperties: false },
);

const TraceParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 1024, description: 'our event id, a native id (XMPP stanza id, Matrix event id, …) or an idempotency key' }) });
const TraceQuery = Type.Object({ room: Type.Optional(RoomParams.properties.room) }, { additionalProperties: false });

const Lag = Type.Object({
  events: Type.Integer({ description: 'feed entries not acknowledged yet' }),
  seconds: Type.Number({ description: 'age of the oldest of them (0 when none)' }),
  retrying: Type.Integer({ description: 'rooms whose head event is being retried' }),
  deadLetters: Type.Integer(),
});

const LinkLag = Type.Object({
  room: Type.String(),
  endpoint: Type.String(),
  target: Type.String(),
  events: Type.Integer({ description: "the room's newest events not delivered on this link yet (pending or retrying), up to LINK_LAG_SCAN" }),
  seconds: Type.Number({ description: 'age of the oldest of them (0 when none)' }),
  retrying: Type.Boolean({ description: "the link's head event is being retried" }),
  deadLetters: Type.Integer({ description: "dead letters of this room on this link's adapter" }),
  capped: Type.Optional(Type.Boolean({ description: 'more than LINK_LAG_SCAN events were looked at: `events` is a lower bound' })),
  inPerSecond: Type.Optional(Type.Number({ description: 'events appended from this adapter into this room per second over the last ~10 s, all replicas (absent: no status source)' })),
  outPerSecond: Type.Optional(Type.Number({ description: 'events of this room delivered to this adapter per second over the last ~10 s, all replicas' })),
});
export type LinkLagView = Static<typeof LinkLag>;

/** events looked at per room for the lag of its links */
export const LINK_LAG_SCAN = 1000;
/** the first page is short: caught up, its newest event settles every link */
const LINK_LAG_PAGES = [10, 100] as const;

/**
 * The delivery lag of each of a room's links. A link delivers its room in log
 * order, so the events not delivered yet are the newest ones: walk back from
 * the newest until each link meets an event it settled (delivered, or moved
 * past: dead-lettered or discarded); events that came from the link itself do
 * not count. Caught up, that is one short page.
 */
export async function linkLag(log: EventLog, room: string, links: readonly RoomLink[], deadLetters: readonly DeadLetter[], now = Date.now()): Promise<LinkLagView[]> {
  const rows = links.map((link) => ({
    link,
    done: false,
    events: 0,
    oldest: undefined as number | undefined,
    retrying: false,
    deadLetters: deadLetters.filter((d) => d.room === room && d.group === `out:${link.endpoint}`).length,
  }));
  let from: string | undefined;
  let scanned = 0;
  while (rows.some((r) => !r.done) && scanned < LINK_LAG_SCAN) {
    const page = await log.roomHistory(room, { dir: 'b', limit: Math.min(scanned === 0 ? LINK_LAG_PAGES[0] : LINK_LAG_PAGES[1], LINK_LAG_SCAN - scanned), ...(from !== undefined ? { from } : {}) });
    if (page.events.length === 0) {
      // the start of the room: nothing older is waiting
      for (const r of rows) r.done = true;
      break;
    }
    const states = await deliveryStates(log, room, links, page.events);
    page.events.forEach((event, i) => {
      rows.forEach((row, j) => {
        if (row.done) return;
        const state = states[i]?.[j]?.state;
        if (state === 'pending' || state === 'retrying') {
          row.events++;
          row.oldest = event.ts.received;
          if (state === 'retrying') row.retrying = true;
        } else if (state !== 'origin') row.done = true;
      });
    });
    scanned += page.events.length;
    if (page.next === undefined) {
      for (const r of rows) r.done = true;
      break;
    }
    from = page.next;
  }
  return rows.map((r) => ({
    room,
    endpoint: r.link.endpoint,
    target: r.link.target,
    events: r.events,
    seconds: r.oldest === undefined ? 0 : Math.max(0, (now - r.oldest) / 1000),
    retrying: r.retrying,
    deadLetters: r.deadLetters,
    ...(r.done ? {} : { capped: true }),
  }));
}

const RuleTestBody = Type.Object(
  {
    filter: Type.String({ minLength: 1, maxLength: 1024, description: 'the link target: an MQTT topic filter, with +name captures' }),
    options: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.Union([Type.String({ maxLength: 4096 }), Type.Number(), Type.Boolean()]))),
    topic: Type.String({ minLength: 1, maxLength: 1024 }),
    payload: Type.String({ maxLength: 65_536 }),
    room: Type.Optional(RoomParams.properties.room),
    endpoint: Type.Optional(Type.String({ pattern: '^[a-z][a-z0-9-]{0,31}$', description: 'the adapter whose settings apply (default: the first MQTT adapter)' })),
  },
  { additionalProperties: false },
);
const RuleTestResult = Type.Object({
  matched: Type.Boolean(),
  message: Type.Optional(Type.Unknown({ description: 'the event draft the rule would ingest' })),
  error: Type.Optional(Type.String()),
});

const key = (eventId: string, endpoint: string) => `${eventId}\u0000${endpoint}`;

/** dead letters of one room looked at for its timeline */
const DEAD_SCAN = 10_000;

/**
 * The delivery state of each event on each of the room's links, in one
 * round of reads issued together (the client pipelines them): per link one
 * HMGET pair of the delivery records, the retry notes, the room's
 * partition's dead letters, and the discard marks of the (event, link)
 * pairs that are not the event's origin. Nothing on this path grows with
 * other rooms' dead letters or discards.
 */
export async function deliveryStates(log: EventLog, room: string, links: readonly RoomLink[], events: readonly LogEvent[]): Promise<DeliveryView[][]> {
  const endpoints = [...new Set(links.map((l) => l.endpoint))];
  const ids = events.map((e) => e.eventId);
  const foreign: Array<{ eventId: string; endpoint: string }> = [];
  for (const e of events) for (const ep of endpoints) if (e.origin.via !== ep) foreign.push({ eventId: e.eventId, endpoint: ep });
  const [records, retries, dead, marks] = await Promise.all([
    Promise.all(endpoints.map(async (endpoint) => [endpoint, await log.delivery.deliveryRecords(room, ids, endpoint)] as const)),
    log.delivery.retries(),
    foreign.length > 0 ? log.delivery.listDeadOfRoom(room, DEAD_SCAN) : Promise.resolve([]),
    Promise.all(foreign.map((u) => log.state.get(DISCARDED_NS, discardedKey(room, u.eventId, u.endpoint)))),
  ]);
  const recordOf = new Map<string, DeliveryRecord>();
  for (const [endpoint, list] of records) list.forEach((r, i) => r && recordOf.set(key(ids[i] ?? '', endpoint), r));
  const retryOf = new Map<string, RetryNote>();
  for (const r of retries) if (r.room === room) retryOf.set(key(r.eventId, r.endpoint), r);
  const deadOf = new Map<string, DeadLetter>();
  for (const d of dead) deadOf.set(key(d.eventId, d.group.replace(/^out:/, '')), d);
  const discardedOf = new Map<string, { at?: number; by?: string }>();
  foreign.forEach((u, i) => {
    const raw = marks[i];
    if (raw === undefined) return;
    try {
      discardedOf.set(key(u.eventId, u.endpoint), JSON.parse(raw) as { at?: number; by?: string });
    } catch {
      discardedOf.set(key(u.eventId, u.endpoint), {});
    }
  });

  return events.map((event) =>
    links.map((link): DeliveryView => {
      const base = { endpoint: link.endpoint, target: link.target };
      const k = key(event.eventId, link.endpoint);
      const record = recordOf.get(k);
      if (record) return { ...base, state: 'delivered', nativeIds: { ...record.nativeIds }, ...(record.at !== undefined ? { at: record.at } : {}) };
      if (event.origin.via === link.endpoint) return { ...base, state: 'origin' };
      const dead = deadOf.get(k);
      if (dead) return { ...base, state: 'dead-lettered', at: dead.ts, attempt: dead.attempts, error: dead.reason, deadLetter: dead.id };
      const gone = discardedOf.get(k);
      if (gone) return { ...base, state: 'discarded', ...(typeof gone.at === 'number' ? { at: gone.at } : {}), ...(typeof gone.by === 'string' ? { error: `discarded by ${gone.by}` } : {}) };
      const retry = retryOf.get(k);
      if (retry) return { ...base, state: 'retrying', attempt: retry.attempt, nextAt: retry.nextAt, error: retry.error, at: retry.at };
      return { ...base, state: 'pending' };
    }),
  );
}

/** rooms looked at together when a trace names no room */
const TRACE_ROOMS_AT_ONCE = 32;

/**
 * Finds an event by our id, an idempotency key, a full native key or a native
 * id (its trace key, see traceKeys), in one room or in all: a few id-map
 * lookups per room, whatever the event's depth in its room.
 */
async function findEvent(log: EventLog, id: string, room: string | undefined): Promise<LogEvent | undefined> {
  const rooms = room !== undefined ? [room] : (await log.rooms.list()).map((r) => r.id);
  const inRoom = async (r: string): Promise<LogEvent | undefined> => {
    const direct = await log.getEvent(r, id).catch(() => undefined);
    if (direct) return direct;
    // an idempotency key or a full native key (`xmpp:xmpp.id:…`), then a native id as a person sees it
    for (const k of [id, traceKeys([id])[0] ?? id]) {
      const eventId = await log.resolve(r, k);
      const found = eventId !== undefined ? await log.getEvent(r, eventId) : undefined;
      if (found) return found;
    }
    return undefined;
  };
  for (let i = 0; i < rooms.length; i += TRACE_ROOMS_AT_ONCE) {
    const hits = await Promise.all(rooms.slice(i, i + TRACE_ROOMS_AT_ONCE).map(inRoom));
    const hit = hits.find((e) => e !== undefined);
    if (hit) return hit;
  }
  return findUnindexed(log, id, rooms);
}

/** newest events looked at per room for a native id the index does not know */
const TRACE_UNINDEXED_SCAN = 500;

/**
 * Events appended before native ids were indexed for tracing (an older build)
 * have no trace key: a Matrix event id still resolves through its native key
 * (global, so unscoped), and a scoped native id (an XMPP stanza id kept with
 * its sender) is looked for among the room's newest events.
 */
async function findUnindexed(log: EventLog, id: string, rooms: readonly string[]): Promise<LogEvent | undefined> {
  for (const r of rooms) {
    const eventId = await log.resolve(r, `matrix:mx.eventId:${id}`);
    const found = eventId !== undefined ? await log.getEvent(r, eventId) : undefined;
    if (found) return found;
  }
  for (const r of rooms) {
    const page = await log.roomHistory(r, { dir: 'b', limit: TRACE_UNINDEXED_SCAN }).catch(() => undefined);
    const hit = page?.events.find((e) => Object.values(e.origin.ids).some((v) => v === id || v.endsWith(`/${id}`)));
    if (hit) return hit;
  }
  return undefined;
}

export function registerOperatorRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const { log } = ctx;
  const onRequest = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens ?? [] });
  const readOnlyPost = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens ?? [], readOnly: true });

  const linksOf = async (room: string): Promise<readonly RoomLink[]> => {
    const spec = await log.rooms.get(room);
    if (!spec) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
    return spec.links;
  };

  app.get(
    '/v1/admin/whoami',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'Which kind of token this is: `admin` (may change things) or `viewer` (reads only), and the name the audit log gives it',
        response: { 200: Type.Object({ role: Type.Union([Type.Literal('admin'), Type.Literal('viewer')]), name: Type.String() }), ...adminErrors() },
      },
    },
    async (request) => adminOf(request),
  );

  app.get<{ Params: Static<typeof RoomParams>; Querystring: Static<typeof TimelineQuery> }>(
    '/v1/admin/rooms/:room/timeline',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: "A room's timeline, newest first, with each link's delivery state per event",
        description: 'Pass `next` as the following `from` for older events. States: `delivered` (with native ids and time), `pending`, `retrying` (attempt, next attempt, last error), `dead-lettered`, `origin`.',
        params: RoomParams,
        querystring: TimelineQuery,
        response: { 200: Type.Object({ events: Type.Array(TimelineEntry), next: Type.Optional(Type.String()), limited: Type.Boolean() }), ...adminErrors(404) },
      },
    },
    async (request) => {
      const { room } = request.params;
      const { from, limit } = request.query;
      // the links and the page are read at once (an unknown room is answered by the links' 404)
      const reading = log.roomHistory(room, { dir: 'b', limit, ...(from !== undefined ? { from } : {}) });
      reading.catch(() => undefined);
      const links = await linksOf(room);
      const page = await reading;
      const states = await deliveryStates(log, room, links, page.events);
      return { events: page.events.map((event, i) => ({ event, deliveries: states[i] ?? [] })), limited: page.limited, ...(page.next !== undefined ? { next: page.next } : {}) };
    },
  );

  app.get<{ Params: Static<typeof TraceParams>; Querystring: Static<typeof TraceQuery> }>(
    '/v1/admin/trace/:id',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'One event end to end: where it came from, its idempotency key, and every delivery with native ids and times',
        description: 'Takes our event id, an idempotency key, a full native key (`xmpp:xmpp.id:…`), or a native id as a client shows it (an XMPP stanza id or message id, a Matrix event id, a native id a delivery returned), at any depth in its room: native ids are indexed when they are learnt and kept as long as the id map (`retention.idTtlDays`). Without `room`, every room is looked in.',
        params: TraceParams,
        querystring: TraceQuery,
        response: {
          200: Type.Object({ room: Type.String(), eventId: Type.String(), idempotencyKey: Type.String(), origin: Type.Unknown(), received: Type.Integer(), event: Type.Unknown(), deliveries: Type.Array(Delivery) }),
          ...adminErrors(404),
        },
      },
    },
    async (request) => {
      const event = await findEvent(log, request.params.id, request.query.room);
      if (!event) throw new SyncgateError('SG_ERR_EVENT_UNKNOWN', `no event, idempotency key or native id ${request.params.id}${request.query.room !== undefined ? ` in ${request.query.room}` : ''}`);
      const links = await linksOf(event.room);
      const [deliveries = []] = await deliveryStates(log, event.room, links, [event]);
      return { room: event.room, eventId: event.eventId, idempotencyKey: event.idem, origin: event.origin, received: event.ts.received, event, deliveries };
    },
  );

  app.get(
    '/v1/admin/lag',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'Delivery lag per adapter and per link, in events and in seconds, with retrying rooms and dead letters, and each link\'s events in and out per second (all replicas)',
        description: `\`adapters\`: the adapter's feed (entries not acknowledged). \`links\`: per room and link, the newest events not delivered there yet (up to ${LINK_LAG_SCAN} per room) and the age of the oldest.`,
        response: { 200: Type.Object({ adapters: Type.Record(Type.String(), Lag), links: Type.Array(LinkLag) }), ...adminErrors() },
      },
    },
    async () => {
      const names = new Set<string>();
      const specs = await log.rooms.list();
      for (const spec of specs) for (const link of spec.links) if (link.endpoint !== 'api') names.add(link.endpoint);
      const status = ctx.status ? await ctx.status() : undefined;
      for (const name of Object.keys(status?.adapters ?? {})) names.add(name);
      const [retries, dead] = await Promise.all([log.delivery.retries(), log.delivery.listDead(100_000)]);
      const now = Date.now();
      const adapters: Record<string, Static<typeof Lag>> = {};
      for (const name of [...names].sort()) {
        const lag = await log.delivery.lag(`out:${name}`);
        adapters[name] = {
          events: lag.events,
          seconds: lag.oldestMs === undefined ? 0 : Math.max(0, (now - lag.oldestMs) / 1000),
          retrying: retries.filter((r) => r.endpoint === name).length,
          deadLetters: dead.filter((d) => d.group === `out:${name}`).length,
        };
      }
      const links: LinkLagView[] = [];
      for (const spec of specs) {
        const own = spec.links.filter((l) => l.endpoint !== 'api');
        if (own.length > 0) links.push(...(await linkLag(log, spec.id, own, dead, now)));
      }
      if (!status) return { adapters, links };
      // the rates per link, all replicas (a link without traffic in the window: 0)
      const rateOf = new Map((status.linkRates ?? []).map((r) => [`${r.room}\u0000${r.endpoint}`, r] as const));
      return {
        adapters,
        links: links.map((l) => {
          const r = rateOf.get(`${l.room}\u0000${l.endpoint}`);
          return { ...l, inPerSecond: r?.inPerSecond ?? 0, outPerSecond: r?.outPerSecond ?? 0 };
        }),
      };
    },
  );

  app.get(
    '/v1/admin/devices/lag',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'How far behind each HTTP device is: when it last synced, the events after its position in its rooms, and the age of the oldest',
        description: 'A device is placed by the `since` of its last `/v1/sync` (noted at most every 5 s) or live-stream connection; `events` counts up to 1,000.',
        response: {
          200: Type.Object({
            devices: Type.Array(
              Type.Object({
                deviceId: Type.String(),
                user: Type.String(),
                name: Type.Optional(Type.String()),
                lastSyncAt: Type.Optional(Type.Integer()),
                events: Type.Optional(Type.Integer()),
                seconds: Type.Optional(Type.Number()),
              }),
            ),
          }),
          ...adminErrors(),
        },
      },
    },
    async () => {
      const [devices, seen] = await Promise.all([ctx.directory.listDevices(), devicePositions(log.state)]);
      const now = Date.now();
      const grantsOf = new Map<string, Promise<string[]>>();
      const rows = await Promise.all(
        devices.slice(0, 1000).map(async (d) => {
          const base = { deviceId: d.deviceId, user: d.user, ...(d.name !== undefined ? { name: d.name } : {}) };
          const at = seen.get(d.deviceId);
          if (!at) return base;
          if (!grantsOf.has(d.user)) grantsOf.set(d.user, ctx.directory.grants(d.user));
          const rooms = new Set(await (grantsOf.get(d.user) ?? Promise.resolve([])));
          const behind = rooms.size === 0 ? undefined : await log.read(at.since, { rooms, limit: 1000 }).catch(() => undefined);
          const oldest = behind?.events[0]?.ts.received;
          return { ...base, lastSyncAt: at.at, events: behind?.events.length ?? 0, seconds: oldest === undefined ? 0 : Math.max(0, (now - oldest) / 1000) };
        }),
      );
      return { devices: rows };
    },
  );

  app.post<{ Body: Static<typeof RuleTestBody> }>(
    '/v1/admin/rules/test',
    {
      onRequest: readOnlyPost,
      schema: {
        tags,
        security,
        summary: 'Try an MQTT rule (link target + options) on a sample topic and payload: the message it would ingest, or why not',
        description: 'Changes nothing: viewer tokens may call it.',
        body: RuleTestBody,
        response: { 200: RuleTestResult, ...adminErrors(404) },
      },
    },
    async (request) => {
      if (!ctx.testRule) throw new SyncgateError('SG_ERR_NOT_FOUND', 'no MQTT adapter is configured on this gateway');
      return ctx.testRule(request.body);
    },
  );
}
