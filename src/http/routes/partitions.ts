/**
 * `GET|PUT /v1/admin/partitions`: the log's partition count, and the admin
 * command that raises it on a running deployment (issue 24). Rooms keep their
 * partitions; new rooms spread over all; every replica follows the stored
 * count. Lowering is refused (409 SG_ERR_PARTITIONS_LOWERED).
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { MAX_PARTITIONS } from '../../core/position.js';
import { adminAuth } from '../auth.js';
import type { HttpContext } from '../context.js';
import { errors } from '../schemas.js';

const Partitions = Type.Object({ partitions: Type.Integer({ minimum: 1, maximum: MAX_PARTITIONS }) }, { additionalProperties: false });

export function registerPartitionRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const onRequest = adminAuth(ctx.config.adminToken);
  const common = { tags: ['admin'], security: [{ bearer: [] }] };

  app.get(
    '/v1/admin/partitions',
    { onRequest, schema: { ...common, summary: "The log's partition count in effect on this replica", response: { 200: Partitions, ...errors(401, 403) } } },
    async () => {
      await ctx.log.open();
      return { partitions: ctx.log.info.partitions };
    },
  );

  app.put<{ Body: Static<typeof Partitions> }>(
    '/v1/admin/partitions',
    {
      onRequest,
      schema: {
        ...common,
        summary: "Raises the log's partition count (never lowers it: 409 SG_ERR_PARTITIONS_LOWERED); answers the count now in effect",
        description: 'The consumer groups are created on the new partitions first, then the count is stored; every replica follows it. Set `partitions` in the configuration to the same value before the next restart.',
        body: Partitions,
        response: { 200: Partitions, ...errors(400, 401, 403, 409) },
      },
    },
    async (request) => ({ partitions: await ctx.log.raisePartitions(request.body.partitions) }),
  );
}
