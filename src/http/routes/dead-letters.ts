/**
 * The admin API for the delivery engine's dead-letter streams: list what gave
 * up (and why), queue entries for another delivery, or drop them. The CLI's
 * `syncgate dlq` does the same straight against Redis.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { SyncgateError } from '../../core/errors.js';
import { adminAuth, adminOf } from '../auth.js';
import { DISCARDED_NS, discardedKey } from './operator.js';
import { AuditOutcome, createAuditWriter } from './audit.js';
import type { HttpContext } from '../context.js';
import { errors } from '../schemas.js';

const security = [{ bearer: [] }];
const tags = ['admin'];

const Group = Type.String({ pattern: '^out:[a-z][a-z0-9-]{0,31}$', description: 'the consumer group, `out:<adapter name>`' });

const DeadLetter = Type.Object({
  id: Type.String(),
  group: Type.String(),
  room: Type.String(),
  feedId: Type.String(),
  eventId: Type.String(),
  reason: Type.String(),
  attempts: Type.Integer(),
  ts: Type.Integer(),
});

const DeadLetterWithEvent = Type.Composite([DeadLetter, Type.Object({ event: Type.Optional(Type.Unknown({ description: 'the event (the payload), when `events=true` and retention kept it' })) })]);

const ListQuery = Type.Object(
  {
    group: Type.Optional(Group),
    room: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'only this room\'s' })),
    reason: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'only those whose reason contains this text (case-insensitive)' })),
    events: Type.Boolean({ default: false, description: 'include each dead letter\'s event' }),
    limit: Type.Integer({ minimum: 1, maximum: 10_000, default: 100 }),
  },
  { additionalProperties: false },
);

const Selection = Type.Object(
  {
    ids: Type.Optional(Type.Array(Type.String({ pattern: '^\\d{1,4}:\\d+-\\d+$' }), { minItems: 1, maxItems: 10_000 })),
    all: Type.Optional(Type.Boolean({ description: 'every dead letter (of `group`, when given)' })),
    group: Type.Optional(Group),
  },
  { additionalProperties: false },
);

export function registerDeadLetterRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const onRequest = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens ?? [] });
  const delivery = ctx.log.delivery;
  const audit = createAuditWriter(app, ctx);

  /** The selected dead letters that exist, in log order (partition, then feed position): a replay goes out in that order. */
  const select = async (body: Static<typeof Selection>): Promise<{ ids: string[]; requested: number; chosen: DeadLetterRecord[] }> => {
    const present = await delivery.listDead(100_000, body.group);
    let chosen: DeadLetterRecord[];
    if (body.all) chosen = present;
    else if (body.ids) {
      const wanted = new Set(body.ids);
      chosen = present.filter((d) => wanted.has(d.id));
    } else throw new SyncgateError('SG_ERR_REQUEST_INVALID', 'give `ids` or `all: true`');
    chosen.sort((a, b) => partitionOf(a.id) - partitionOf(b.id) || compareStreamIds(a.feedId, b.feedId));
    return { ids: chosen.map((d) => d.id), requested: body.all ? chosen.length : (body.ids?.length ?? 0), chosen };
  };

  app.get<{ Querystring: Static<typeof ListQuery> }>(
    '/v1/admin/dead-letters',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'Events the delivery engine gave up on, oldest first; reading them consumes nothing',
        description: 'Filter by link (`group`, `out:<adapter>`, and `room`) and by `reason`; `events=true` adds each one\'s event (the payload). `total` counts the filtered ones.',
        querystring: ListQuery,
        response: { 200: Type.Object({ deadLetters: Type.Array(DeadLetterWithEvent), total: Type.Integer() }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const { group, room, reason, events, limit } = request.query;
      const needle = reason?.toLowerCase();
      const filtered = (await delivery.listDead(100_000, group)).filter((d) => (room === undefined || d.room === room) && (needle === undefined || d.reason.toLowerCase().includes(needle)));
      const page = filtered.slice(0, limit);
      const withEvents = events ? await Promise.all(page.map(async (d) => ({ ...d, ...(await eventOf(d)) }))) : page;
      return { deadLetters: withEvents, total: filtered.length };
    },
  );

  const eventOf = async (d: DeadLetterRecord): Promise<{ event?: unknown }> => {
    const event = await ctx.log.getEvent(d.room, d.eventId).catch(() => undefined);
    return event ? { event } : {};
  };

  app.post<{ Body: Static<typeof Selection> }>(
    '/v1/admin/dead-letters/replay',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'Send dead letters back to their original link, in log order, once each (by the lease holder); admin token only',
        description: 'Ids that are no longer dead letters (already replayed or dropped) are skipped: `replayed` counts what was queued. Logged with who asked, and written to the audit trail: if that write fails the replay still stands (200), `audit.recorded` is false and the gateway retries the write.',
        body: Selection,
        response: { 200: Type.Object({ replayed: Type.Integer(), requested: Type.Integer(), audit: AuditOutcome }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const { ids, requested } = await select(request.body);
      const replayed = await delivery.replayDead(ids);
      request.log.info({ audit: 'dead-letters.replay', by: adminOf(request).name, ids, replayed }, 'operator replayed dead letters');
      const recorded = await audit.record({ who: adminOf(request), action: 'dead-letters.replay', ids: request.body.ids ?? ids, done: replayed, selection: selectionOf(request.body) }, request.log);
      return { replayed, requested, audit: recorded };
    },
  );

  app.post<{ Body: Static<typeof Selection> }>(
    '/v1/admin/dead-letters/drop',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: 'Discard dead letters for good; admin token only',
        description: 'Logged with who asked, and written to the audit trail: if that write fails the discard still stands (200), `audit.recorded` is false and the gateway retries the write.',
        body: Selection,
        response: { 200: Type.Object({ dropped: Type.Integer(), requested: Type.Integer(), audit: AuditOutcome }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const { ids, requested, chosen } = await select(request.body);
      const dropped = await delivery.dropDead(ids);
      // remembered, so the timeline says `discarded` rather than `pending` for good
      const by = adminOf(request).name;
      // (the discard is done: a failed mark is logged, not answered as a failure)
      await Promise.all(
        chosen.map((d) => ctx.log.state.set(DISCARDED_NS, discardedKey(d.room, d.eventId, d.group.replace(/^out:/, '')), JSON.stringify({ at: Date.now(), by }))),
      ).catch((err: unknown) => request.log.error({ err, ids }, 'discarded dead letters not marked as discarded: the timeline shows them as pending'));
      request.log.info({ audit: 'dead-letters.drop', by, ids, dropped }, 'operator discarded dead letters');
      const recorded = await audit.record({ who: adminOf(request), action: 'dead-letters.drop', ids: request.body.ids ?? ids, done: dropped, selection: selectionOf(request.body) }, request.log);
      return { dropped, requested, audit: recorded };
    },
  );
}

type DeadLetterRecord = Static<typeof DeadLetter>;

/** what the audit trail keeps of a selection made by filter rather than by ids */
function selectionOf(body: Static<typeof Selection>): { all?: boolean; group?: string } {
  return { ...(body.all !== undefined ? { all: body.all } : {}), ...(body.group !== undefined ? { group: body.group } : {}) };
}

const partitionOf = (id: string): number => Number(id.slice(0, id.indexOf(':')));

function compareStreamIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am - bm || as - bs;
}
