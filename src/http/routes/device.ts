/**
 * The device API (device bearer token): rooms, idempotent send, long-poll
 * sync, room history and read markers. A device reads and writes only the
 * rooms its user was granted.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { SyncgateError } from '../../core/errors.js';
import type { DraftOf, EventDraft, LogEvent } from '../../core/event.js';
import type { RoomSpec } from '../../core/ports.js';
import { utf8Length } from '../../core/text.js';
import { deviceAuth, deviceOf } from '../auth.js';
import type { HttpContext } from '../context.js';
import { NS, type DeviceIdentity, type UserRecord } from '../directory.js';
import {
  MarkerBody,
  MarkerResult,
  MessagesQuery,
  MessagesResult,
  RoomParams,
  RoomsResult,
  SendBody,
  SendParams,
  SendResult,
  SyncQuery,
  SyncResult,
  MAX_PAGE,
  TelemetryQuery,
  TelemetryResult,
  WhoAmI,
  errors,
} from '../schemas.js';
import { DEVICE_ID, TXN_ID, deviceView, syncPageBody, telemetryView, viewFor } from '../view.js';

/** how often a send still waiting for the log checks whether its connection was lost */
const OUTAGE_CHECK_MS = 250;

const security = [{ bearer: [] }];
const deviceErrors = (...extra: number[]) => errors(400, 401, 429, ...extra);

/** The idempotency key of an API send (docs/protocols.md, "What every adapter does"). */
export function sendKey(deviceId: string, txnId: string): string {
  return `api:${deviceId}:${txnId}`;
}

function markerKey(user: string, room: string): string {
  return `${user}/${room}`;
}

/** Runs one task per key at a time in this process (markers: advance, then append). */
class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(task, task);
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, settled);
    void settled.then(() => {
      if (this.tails.get(key) === settled) this.tails.delete(key);
    });
    return result;
  }
}

export function registerDeviceRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const { log, directory, metrics } = ctx;
  const onRequest = deviceAuth({ directory, rateLimit: ctx.rateLimit });
  const markerLock = new KeyedLock();

  /** The linked endpoints that will cut this body (the size rule, README "Message size"). */
  function exceededLimits(links: RoomSpec['links'], body: string): Array<{ endpoint: string; limit: number }> {
    const bytes = utf8Length(body);
    const out = new Map<string, number>();
    for (const { endpoint } of links) {
      const limit = ctx.bodyLimits[endpoint];
      if (limit !== undefined && bytes > limit) out.set(endpoint, limit);
    }
    return [...out].map(([endpoint, limit]) => ({ endpoint, limit }));
  }

  function sender(user: UserRecord): EventDraft['sender'] {
    return { uid: user.id, proto: 'api', native: user.id, auth: 'api-token', ...(user.display !== undefined ? { display: user.display } : {}) };
  }

  function origin(device: DeviceIdentity, txnId?: string): EventDraft['origin'] {
    return { proto: 'api', via: 'api', ids: { [DEVICE_ID]: device.deviceId, ...(txnId !== undefined ? { [TXN_ID]: txnId } : {}) } };
  }

  async function related(room: string, eventId: string, role: string): Promise<LogEvent> {
    const event = await log.getEvent(room, eventId);
    if (!event) throw new SyncgateError('SG_ERR_EVENT_UNKNOWN', `${role} ${eventId} is not an event of room ${room}`);
    return event;
  }

  /** The event a relation is about: edits always point at the original message (docs/architecture.md, "Positions, event ids and cursors"). */
  async function original(room: string, eventId: string, role: string): Promise<LogEvent> {
    const event = await related(room, eventId, role);
    return event.kind === 'edit' ? related(room, event.rel.replaces, role) : event;
  }

  function expectKind(event: LogEvent, kinds: readonly LogEvent['kind'][], role: string): void {
    if (!kinds.includes(event.kind)) throw new SyncgateError('SG_ERR_RELATION_INVALID', `${role} must be a ${kinds.join(' or ')}, ${event.eventId} is a ${event.kind}`);
  }

  function expectOwn(event: LogEvent, user: UserRecord, what: string): void {
    if (event.sender.proto !== 'api' || event.sender.uid !== user.id) throw new SyncgateError('SG_ERR_FORBIDDEN', `you can only ${what} your own events`);
  }

  function checkContent(content: DraftOf<'message'>['content']): void {
    if ((content.format === undefined) !== (content.formatted === undefined)) {
      throw new SyncgateError('SG_ERR_REQUEST_INVALID', 'content.format and content.formatted go together');
    }
  }

  async function buildDraft(device: DeviceIdentity, user: UserRecord, room: string, txnId: string, body: SendBody): Promise<EventDraft> {
    const common = { v: 1 as const, idem: sendKey(device.deviceId, txnId), room, sender: sender(user), origin: origin(device, txnId), ts: { received: Date.now() } };
    switch (body.kind) {
      case 'message': {
        checkContent(body.content);
        const rel: { replyTo?: string; thread?: string } = {};
        if (body.rel?.replyTo !== undefined) rel.replyTo = (await original(room, body.rel.replyTo, 'rel.replyTo')).eventId;
        if (body.rel?.thread !== undefined) rel.thread = (await original(room, body.rel.thread, 'rel.thread')).eventId;
        return { ...common, kind: 'message', content: body.content, ...(Object.keys(rel).length > 0 ? { rel } : {}) };
      }
      case 'edit': {
        checkContent(body.content);
        const target = await original(room, body.rel.replaces, 'rel.replaces');
        expectKind(target, ['message'], 'rel.replaces');
        expectOwn(target, user, 'edit');
        return { ...common, kind: 'edit', content: body.content, rel: { replaces: target.eventId } };
      }
      case 'retraction': {
        const target = await original(room, body.rel.redacts, 'rel.redacts');
        expectKind(target, ['message', 'reaction'], 'rel.redacts');
        expectOwn(target, user, 'retract');
        return { ...common, kind: 'retraction', rel: { redacts: target.eventId } };
      }
      case 'reaction': {
        const target = await original(room, body.rel.reactsTo, 'rel.reactsTo');
        expectKind(target, ['message'], 'rel.reactsTo');
        return { ...common, kind: 'reaction', rel: { reactsTo: target.eventId }, reaction: { keys: body.reaction.keys } };
      }
    }
  }

  app.get(
    '/v1/whoami',
    { onRequest, schema: { tags: ['device'], security, summary: 'The device and user of this token', response: { 200: WhoAmI, ...deviceErrors() } } },
    async (request) => {
      const device = deviceOf(request);
      const user = await directory.getUser(device.user);
      return { user: device.user, deviceId: device.deviceId, ...(user?.display !== undefined ? { display: user.display } : {}) };
    },
  );

  app.get(
    '/v1/rooms',
    { onRequest, schema: { tags: ['device'], security, summary: "The rooms granted to this device's user", response: { 200: RoomsResult, ...deviceErrors() } } },
    async (request) => {
      const granted = await directory.grants(deviceOf(request).user);
      const specs = await Promise.all(granted.map((id) => log.rooms.get(id)));
      return { rooms: specs.flatMap((s) => (s ? [{ id: s.id, ...(s.name !== undefined ? { name: s.name } : {}) }] : [])) };
    },
  );

  /**
   * An append waits, in order, while the log's connection is lost. The client
   * is told at once instead: 503, retry later. The append still lands when the
   * log is back, and a retry with the same txnId answers with that event.
   */
  function answeredOrOutage<T>(pending: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const outage = new Promise<never>((_, reject) => {
      const check = () => {
        if (log.available) timer = setTimeout(check, OUTAGE_CHECK_MS);
        else reject(new SyncgateError('SG_ERR_LOG_UNAVAILABLE', 'the event log went away during the send; retry with the same txnId'));
      };
      timer = setTimeout(check, OUTAGE_CHECK_MS);
    });
    return Promise.race([pending, outage]).finally(() => clearTimeout(timer));
  }

  app.put<{ Params: Static<typeof SendParams>; Body: SendBody }>(
    '/v1/rooms/:room/send/:txnId',
    {
      onRequest,
      schema: {
        tags: ['device'],
        security,
        summary: 'Send a message, edit, retraction or reaction; idempotent per device and txnId',
        description: 'Repeating a txnId from the same device returns the first answer and appends nothing.',
        params: SendParams,
        body: SendBody,
        response: { 200: SendResult, ...deviceErrors(403, 404, 413) },
      },
    },
    async (request) => {
      const device = deviceOf(request);
      const { room, txnId } = request.params;
      const spec = await directory.requireRoom(device.user, room);
      const user = (await directory.getUser(device.user)) ?? { id: device.user, created: 0 };
      const draft = await buildDraft(device, user, room, txnId, request.body);
      const result = await answeredOrOutage(log.append(draft));
      metrics.appends.inc({ kind: draft.kind, result: result.duplicate ? 'duplicate' : 'appended' });
      const exceeds = 'content' in draft && draft.content ? exceededLimits(spec.links, draft.content.body) : [];
      return { eventId: result.eventId, cursor: result.cursor, ...(exceeds.length > 0 ? { exceeds } : {}) };
    },
  );

  app.get<{ Querystring: SyncQuery }>(
    '/v1/sync',
    {
      onRequest,
      schema: {
        tags: ['device'],
        security,
        summary: 'Events after a cursor in the granted rooms; waits up to `timeout` ms when there are none',
        description: 'Without `since`: the newest `limit` events and a cursor. Pass `next` as the following `since`.',
        querystring: SyncQuery,
        response: { 200: SyncResult, ...deviceErrors() },
      },
    },
    async (request, reply) => {
      const device = deviceOf(request);
      const rooms = new Set(await directory.grants(device.user));
      const { since, limit } = request.query;
      // Written here, not by the response schema's serialiser: for a 1,000-event page the
      // schema-driven writer took 6-10 ms against 2-3 ms for JSON.stringify, longer than
      // reading the page; and the events come as JSON text written from the stored bytes
      // (log.readJson), not decoded and serialised again (issue 19). The same fields; the
      // schema still documents them.
      const send = (r: { events: string[]; next: string; limited: boolean }) =>
        reply.type('application/json; charset=utf-8').send(syncPageBody(r.events, r.next, r.limited));
      if (since === undefined) {
        const latest = await log.latest({ rooms, limit });
        return send({ events: latest.events.map((e) => JSON.stringify(viewFor(e, device.deviceId))), next: latest.next, limited: latest.limited });
      }
      const view = deviceView(device.deviceId);
      let result = await log.readJson(since, { rooms, limit }, view);
      const timeout = Math.min(request.query.timeout, ctx.config.syncTimeoutMaxMs);
      if (result.events.length === 0 && !result.limited && timeout > 0) {
        const started = performance.now();
        const outcome = await waitForEvent(result.next, rooms, timeout, reply);
        metrics.syncWait.observe({ outcome }, (performance.now() - started) / 1000);
        if (outcome === 'event') result = await log.readJson(result.next, { rooms, limit }, view);
      }
      return send(result);
    },
  );

  /** Waits on the tail until its first item, the timeout, the client leaving or shutdown. */
  async function waitForEvent(from: string, rooms: ReadonlySet<string>, timeoutMs: number, reply: FastifyReply): Promise<'event' | 'timeout' | 'aborted'> {
    const controller = new AbortController();
    const untrack = ctx.live.trackPoll(controller);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onClose = () => controller.abort();
    reply.raw.once('close', onClose);
    metrics.syncWaiting.inc();
    try {
      if (controller.signal.aborted) return 'aborted';
      const it = log.tail(from, { rooms, signal: controller.signal })[Symbol.asyncIterator]();
      const first = await it.next();
      await it.return?.();
      if (!first.done) return 'event';
      return timedOut ? 'timeout' : 'aborted';
    } finally {
      clearTimeout(timer);
      reply.raw.off('close', onClose);
      metrics.syncWaiting.dec();
      untrack();
    }
  }

  app.get<{ Params: Static<typeof RoomParams>; Querystring: MessagesQuery }>(
    '/v1/rooms/:room/messages',
    {
      onRequest,
      schema: {
        tags: ['device'],
        security,
        summary: "Page through a room's history",
        description: '`dir=b` pages backwards from the newest event (or from `from`), `dir=f` forwards from the oldest; pass `next` as the following `from`.',
        params: RoomParams,
        querystring: MessagesQuery,
        response: { 200: MessagesResult, ...deviceErrors(403, 404) },
      },
    },
    async (request) => {
      const device = deviceOf(request);
      const { room } = request.params;
      await directory.requireRoom(device.user, room);
      const { from, dir, limit } = request.query;
      const page = await log.roomHistory(room, { dir, limit, ...(from !== undefined ? { from } : {}) });
      return { events: page.events.map((e) => viewFor(e, device.deviceId)), limited: page.limited, ...(page.next !== undefined ? { next: page.next } : {}) };
    },
  );

  app.get<{ Params: Static<typeof RoomParams>; Querystring: TelemetryQuery }>(
    '/v1/rooms/:room/telemetry',
    {
      onRequest,
      schema: {
        tags: ['device'],
        security,
        summary: "Page through a room's telemetry (device readings kept out of the timeline), newest first",
        description: 'Pass `next` as the following `from` for older readings. The stream is capped (`retention.telemetryMaxLen`): old readings go first.',
        params: RoomParams,
        querystring: TelemetryQuery,
        response: { 200: TelemetryResult, ...deviceErrors(403, 404) },
      },
    },
    async (request) => {
      const device = deviceOf(request);
      const { room } = request.params;
      await directory.requireRoom(device.user, room);
      const { from, limit } = request.query;
      // One more than asked tells whether there is a next page (at the largest page size, a full page says so).
      const fetch = Math.min(limit + 1, MAX_PAGE);
      const entries = await log.telemetry(room, fetch, from !== undefined ? { before: from } : {});
      const page = entries.slice(0, limit);
      const last = page.at(-1);
      const more = entries.length > limit || (fetch === limit && entries.length === limit);
      return { readings: page.map(telemetryView), ...(more && last ? { next: last.id } : {}) };
    },
  );

  app.put<{ Params: Static<typeof RoomParams>; Body: Static<typeof MarkerBody> }>(
    '/v1/rooms/:room/markers',
    {
      onRequest,
      schema: {
        tags: ['device'],
        security,
        summary: "Set the user's read marker in a room (monotonic: an older marker is accepted and ignored)",
        description: 'When the marker moves, a `marker` event is appended, so the user\'s other devices see it in sync and in the live stream.',
        params: RoomParams,
        body: MarkerBody,
        response: { 200: MarkerResult, ...deviceErrors(403, 404) },
      },
    },
    async (request) => {
      const device = deviceOf(request);
      const { room } = request.params;
      const { upTo } = request.body;
      await directory.requireRoom(device.user, room);
      await related(room, upTo, 'upTo');
      const key = markerKey(device.user, room);
      return markerLock.run(key, async () => {
        const stored = await log.state.advance(NS.markers, key, upTo);
        // Another replica may have moved it further meanwhile: append only what is still current.
        if (stored === upTo && (await log.state.get(NS.markers, key)) === upTo) {
          const user = (await directory.getUser(device.user)) ?? { id: device.user, created: 0 };
          const draft: DraftOf<'marker'> = {
            v: 1,
            kind: 'marker',
            // One marker event per (user, event), however often it is set.
            idem: `api:marker:${device.user}:${upTo}`,
            room,
            sender: sender(user),
            origin: origin(device),
            ts: { received: Date.now() },
            rel: { upTo },
          };
          const result = await log.append(draft);
          metrics.appends.inc({ kind: 'marker', result: result.duplicate ? 'duplicate' : 'appended' });
        }
        return { upTo: stored };
      });
    },
  );

  app.get<{ Params: Static<typeof RoomParams> }>(
    '/v1/rooms/:room/markers',
    {
      onRequest,
      schema: { tags: ['device'], security, summary: "The user's read marker in a room", params: RoomParams, response: { 200: MarkerResult, ...deviceErrors(403, 404) } },
    },
    async (request) => {
      const device = deviceOf(request);
      await directory.requireRoom(device.user, request.params.room);
      return { upTo: (await log.state.get(NS.markers, markerKey(device.user, request.params.room))) ?? null };
    },
  );
}
