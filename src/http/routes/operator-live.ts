/**
 * `GET /v1/admin/rooms/:room/live`: a room's timeline, live, for the console
 * (and curl) with the admin or a viewer token. Server-sent events only; the
 * console reads it with fetch() so the token stays in a header, never in a
 * URL.
 *
 * - `snapshot`: the newest `limit` timeline entries (newest first, as
 *   `GET …/timeline` pages them, with its `next` for older pages);
 * - `entry`: each event appended after the snapshot, with its delivery state;
 * - `deliveries`: `{eventId, deliveries}` when the delivery state of a shown
 *   event changes (pending → delivered, retrying → dead-lettered, replayed…).
 *   One checker per room (RoomWatch), shared by every page open on it,
 *   re-derives once a second the state of the room's newest events shown
 *   (at most WATCH_MAX) that are not settled, and sends each change to the
 *   pages showing that event: the cost grows with the room's unsettled
 *   events, not with the number of pages; the client never polls;
 * - `heartbeat`, and a last `close` with a code when the server ends it.
 *
 * The tail starts at the room's head taken before the snapshot is read, so an
 * event appended in between comes in both: clients replace by event id.
 */
import type { FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import { Type, type Static } from '@sinclair/typebox';
import { Counter } from 'prom-client';
import type { LogEvent } from '../../core/event.js';
import { isSyncgateError, SyncgateError } from '../../core/errors.js';
import type { RoomLink } from '../../core/ports.js';
import { adminAuth } from '../auth.js';
import type { HttpContext } from '../context.js';
import { RoomParams, errors } from '../schemas.js';
import { deliveryStates, type DeliveryView } from './operator.js';

/** how often the delivery state of watched events is re-derived */
export const LIVE_STATE_MS = 1000;
/** events whose delivery state one room's checker (and one page) keeps watching (the newest) */
const WATCH_MAX = 500;
/** a console that does not read its stream is closed past this many buffered bytes */
const MAX_BUFFERED = 4 * 1024 * 1024;
/** states that change only by an operator's action or not at all: not re-derived */
const SETTLED: ReadonlySet<string> = new Set(['delivered', 'origin', 'discarded']);

const LiveQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 500, default: 50, description: 'entries in the first `snapshot` frame' }),
    heartbeatMs: Type.Integer({ minimum: 1000, maximum: 60_000, default: 15_000 }),
  },
  { additionalProperties: false },
);

interface Watched {
  event: LogEvent;
  deliveries: DeliveryView[];
}

export function registerOperatorLiveRoute(app: FastifyInstance, ctx: HttpContext): void {
  const { log } = ctx;
  const onRequest = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens ?? [] });
  const watches = new RoomWatches(ctx);
  app.addHook('onClose', async () => watches.close());

  app.get<{ Params: Static<typeof RoomParams>; Querystring: Static<typeof LiveQuery> }>(
    '/v1/admin/rooms/:room/live',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        security: [{ bearer: [] }],
        summary: "A room's timeline live (SSE): a snapshot, then each new event and each change of a link's delivery state",
        description: [
          'Open with `Accept: text/event-stream` and the admin or a viewer token in `Authorization` (never in the URL).',
          'Named events: `snapshot` (`{events, next, limited}` as `GET /v1/admin/rooms/{room}/timeline` answers), `entry` (`{event, deliveries}` for each event appended after it), `deliveries` (`{eventId, deliveries}` when a shown event\'s delivery state changed; derived by the server about once a second), `heartbeat`, and a last `close` (`{code, message}`).',
          'An event appended while the snapshot is read may come as an `entry` too: replace by `eventId`.',
        ].join('\n\n'),
        params: RoomParams,
        querystring: LiveQuery,
        produces: ['text/event-stream'],
        response: errors(400, 401, 403, 404),
      },
    },
    async (request, reply) => {
      const accept = request.headers.accept ?? '';
      if (!accept.includes('text/event-stream')) throw new SyncgateError('SG_ERR_REQUEST_INVALID', 'open the live timeline with "Accept: text/event-stream"');
      const { room } = request.params;
      const spec = await log.rooms.get(room);
      if (!spec) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
      const rooms = new Set([room]);
      const since = await log.head(rooms);
      const page = await log.roomHistory(room, { dir: 'b', limit: request.query.limit });
      const states = await deliveryStates(log, room, spec.links, page.events);

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      const stream = new RoomLiveStream(ctx, res, room, watches.join(room, spec.links), request.query.heartbeatMs);
      res.on('close', () => stream.stop());
      res.on('error', (err) => request.log.debug({ err }, 'live timeline connection error'));
      const entries = page.events.map((event, i) => ({ event, deliveries: states[i] ?? [] }));
      stream.send('snapshot', { events: entries, limited: page.limited, ...(page.next !== undefined ? { next: page.next } : {}) });
      for (const e of [...entries].reverse()) stream.watch(e);
      void stream.run(since);
    },
  );
}

/** a page's way to learn of delivery changes of the events it shows */
interface WatchSubscriber {
  shows(eventId: string): boolean;
  changed(eventId: string, deliveries: DeliveryView[]): void;
}

/** The shared checkers, one per room with an open page; a checker ends with its last page. */
class RoomWatches {
  private readonly rooms = new Map<string, RoomWatch>();
  private readonly checks: Counter;

  constructor(private readonly ctx: HttpContext) {
    this.checks = new Counter({
      name: 'syncgate_console_live_checks_total',
      help: "Delivery-state checks of the live room pages: one per room with open pages per tick (LIVE_STATE_MS), however many pages follow it",
      registers: [ctx.registry],
    });
  }

  join(room: string, links: readonly RoomLink[]): RoomWatch {
    let watch = this.rooms.get(room);
    if (!watch) {
      watch = new RoomWatch(this.ctx, room, links, this.checks, () => this.rooms.delete(room));
      this.rooms.set(room, watch);
    } else watch.setLinks(links);
    return watch;
  }

  close(): void {
    for (const w of this.rooms.values()) w.close();
    this.rooms.clear();
  }
}

/**
 * One room's checker: the newest WATCH_MAX events any of its pages shows,
 * with their last derived delivery state; once a tick, the state of those
 * not settled is derived in one batch and each change goes to the pages
 * showing the event. A new event's first state is derived once for all
 * pages too.
 */
class RoomWatch {
  private readonly watched = new Map<string, Watched>();
  private readonly subscribers = new Set<WatchSubscriber>();
  private readonly firstStates = new Map<string, Promise<DeliveryView[]>>();
  private readonly timer: NodeJS.Timeout;
  private refreshing = false;
  private closed = false;

  constructor(
    private readonly ctx: HttpContext,
    private readonly room: string,
    private links: readonly RoomLink[],
    private readonly checks: Counter,
    private readonly onEmpty: () => void,
  ) {
    this.timer = setInterval(() => void this.refresh(), LIVE_STATE_MS);
    this.timer.unref();
  }

  /** a room's links changed at run time: the next page brings them */
  setLinks(links: readonly RoomLink[]): void {
    if (JSON.stringify(links) !== JSON.stringify(this.links)) this.links = links;
  }

  subscribe(subscriber: WatchSubscriber): () => void {
    this.subscribers.add(subscriber);
    return () => {
      this.subscribers.delete(subscriber);
      if (this.subscribers.size === 0) this.close();
    };
  }

  /** a page shows this entry: watched from now on; a fresher state than the one known goes to every page */
  watch(entry: Watched): void {
    const known = this.watched.get(entry.event.eventId);
    if (known) {
      if (JSON.stringify(known.deliveries) !== JSON.stringify(entry.deliveries)) {
        known.deliveries = entry.deliveries;
        this.emit(entry.event.eventId, entry.deliveries);
      }
      return;
    }
    this.watched.set(entry.event.eventId, { event: entry.event, deliveries: entry.deliveries });
    while (this.watched.size > WATCH_MAX) {
      const oldest = this.watched.keys().next().value;
      if (oldest === undefined) break;
      this.watched.delete(oldest);
    }
  }

  /** the state of an event the pages just received from the tail: derived once, whatever the number of pages */
  async stateOf(event: LogEvent): Promise<DeliveryView[]> {
    const known = this.watched.get(event.eventId);
    if (known) return known.deliveries;
    let pending = this.firstStates.get(event.eventId);
    if (!pending) {
      pending = deliveryStates(this.ctx.log, this.room, this.links, [event]).then(([d = []]) => d);
      this.firstStates.set(event.eventId, pending);
      const forget = () => this.firstStates.delete(event.eventId);
      pending.then(forget, forget);
    }
    const deliveries = await pending;
    this.watch({ event, deliveries });
    return deliveries;
  }

  private emit(eventId: string, deliveries: DeliveryView[]): void {
    for (const s of this.subscribers) if (s.shows(eventId)) s.changed(eventId, deliveries);
  }

  /** re-derives the delivery state of the watched events not settled, and sends what changed */
  private async refresh(): Promise<void> {
    if (this.refreshing || this.closed) return;
    this.refreshing = true;
    try {
      const open = [...this.watched.values()].filter((w) => w.deliveries.some((d) => !SETTLED.has(d.state)));
      if (open.length === 0) return;
      this.checks.inc();
      const states = await deliveryStates(this.ctx.log, this.room, this.links, open.map((w) => w.event));
      open.forEach((w, i) => {
        const now = states[i] ?? [];
        if (JSON.stringify(now) === JSON.stringify(w.deliveries)) return;
        w.deliveries = now;
        this.emit(w.event.eventId, now);
      });
    } catch (err) {
      if (!this.closed) this.ctx.logger.warn({ err, room: this.room }, 'live timeline: delivery state not derived; will retry');
    } finally {
      this.refreshing = false;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.onEmpty();
  }
}

class RoomLiveStream implements WatchSubscriber {
  private readonly abort = new AbortController();
  /** the events this page shows (the newest WATCH_MAX) */
  private readonly shown = new Set<string>();
  private stopped = false;
  private readonly untrack: () => void;
  private readonly unsubscribe: () => void;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly ctx: HttpContext,
    private readonly res: ServerResponse,
    private readonly room: string,
    private readonly roomWatch: RoomWatch,
    heartbeatMs: number,
  ) {
    // graceful shutdown aborts tracked controllers
    this.untrack = ctx.live.trackPoll(this.abort);
    this.unsubscribe = roomWatch.subscribe(this);
    this.abort.signal.addEventListener('abort', () => this.finish('SG_ERR_LOG_CLOSED', 'the server is shutting down; reconnect'));
    this.timers.push(setInterval(() => this.send('heartbeat', { ts: Date.now() }), heartbeatMs).unref());
  }

  send(name: string, data: unknown): void {
    if (this.stopped || this.res.writableEnded) return;
    this.res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
    if (this.res.writableLength > MAX_BUFFERED) this.finish('SG_ERR_STREAM_SLOW', 'the client did not keep up with the stream; reconnect');
  }

  shows(eventId: string): boolean {
    return this.shown.has(eventId);
  }

  changed(eventId: string, deliveries: DeliveryView[]): void {
    this.send('deliveries', { eventId, deliveries });
  }

  /** this page shows the entry (insertion = log order; the newest WATCH_MAX are followed) */
  watch(entry: Watched): void {
    this.shown.delete(entry.event.eventId);
    this.shown.add(entry.event.eventId);
    while (this.shown.size > WATCH_MAX) {
      const oldest = this.shown.values().next().value;
      if (oldest === undefined) break;
      this.shown.delete(oldest);
    }
    this.roomWatch.watch(entry);
  }

  async run(since: string): Promise<void> {
    try {
      for await (const item of this.ctx.log.tail(since, { rooms: new Set([this.room]), signal: this.abort.signal })) {
        if (this.stopped) break;
        if (item.type !== 'event') continue;
        const deliveries = await this.roomWatch.stateOf(item.event);
        const entry = { event: item.event, deliveries };
        this.watch(entry);
        this.send('entry', entry);
      }
    } catch (err) {
      if (this.stopped) return;
      const closing = isSyncgateError(err, 'SG_ERR_LOG_CLOSED');
      if (!closing) this.ctx.logger.error({ err, room: this.room }, 'live timeline failed');
      this.finish(closing ? 'SG_ERR_LOG_CLOSED' : 'SG_ERR_INTERNAL', closing ? 'the server is shutting down; reconnect' : 'the live timeline failed; reconnect');
    }
  }

  private finish(code: string, message: string): void {
    if (this.stopped) return;
    if (!this.res.writableEnded) {
      this.res.write(`event: close\ndata: ${JSON.stringify({ code, message })}\n\n`);
      this.res.end();
    }
    this.stop();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.unsubscribe();
    this.untrack();
    this.abort.abort();
  }
}
