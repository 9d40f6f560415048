/**
 * The admin API for the delivery engine's dead-letter streams: list what gave
 * up (and why), queue entries for another delivery, or drop them. The CLI's
 * `syncgate dlq` does the same straight against Redis.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { SyncgateError } from '../../core/errors.js';
import { adminAuth } from '../auth.js';
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

const ListQuery = Type.Object({ group: Type.Optional(Group), limit: Type.Integer({ minimum: 1, maximum: 10_000, default: 100 }) }, { additionalProperties: false });

const Selection = Type.Object(
  {
    ids: Type.Optional(Type.Array(Type.String({ pattern: '^\\d{1,4}:\\d+-\\d+$' }), { minItems: 1, maxItems: 10_000 })),
    all: Type.Optional(Type.Boolean({ description: 'every dead letter (of `group`, when given)' })),
    group: Type.Optional(Group),
  },
  { additionalProperties: false },
);

export function registerDeadLetterRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const onRequest = adminAuth(ctx.config.adminToken);
  const delivery = ctx.log.delivery;

  const select = async (body: Static<typeof Selection>): Promise<string[]> => {
    if (body.all) return (await delivery.listDead(100_000, body.group)).map((d) => d.id);
    if (!body.ids) throw new SyncgateError('SG_ERR_REQUEST_INVALID', 'give `ids` or `all: true`');
    return body.ids;
  };

  app.get<{ Querystring: Static<typeof ListQuery> }>(
    '/v1/admin/dead-letters',
    { onRequest, schema: { tags, security, summary: 'Events the delivery engine gave up on, oldest first', querystring: ListQuery, response: { 200: Type.Object({ deadLetters: Type.Array(DeadLetter), total: Type.Integer() }), ...errors(400, 401, 403) } } },
    async (request) => ({ deadLetters: await delivery.listDead(request.query.limit, request.query.group), total: await delivery.deadCount(request.query.group) }),
  );

  app.post<{ Body: Static<typeof Selection> }>(
    '/v1/admin/dead-letters/replay',
    { onRequest, schema: { tags, security, summary: 'Queue dead letters for another delivery (in order, by the lease holder)', body: Selection, response: { 200: Type.Object({ replayed: Type.Integer(), requested: Type.Integer() }), ...errors(400, 401, 403) } } },
    async (request) => {
      const ids = await select(request.body);
      return { replayed: await delivery.replayDead(ids), requested: ids.length };
    },
  );

  app.post<{ Body: Static<typeof Selection> }>(
    '/v1/admin/dead-letters/drop',
    { onRequest, schema: { tags, security, summary: 'Remove dead letters for good', body: Selection, response: { 200: Type.Object({ dropped: Type.Integer(), requested: Type.Integer() }), ...errors(400, 401, 403) } } },
    async (request) => {
      const ids = await select(request.body);
      return { dropped: await delivery.dropDead(ids), requested: ids.length };
    },
  );
}
