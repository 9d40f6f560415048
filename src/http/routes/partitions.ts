/**
 * `GET|PUT /v1/admin/partitions`: the log's partition count, and the admin
 * command that raises it on a running deployment (issue 24). Rooms keep their
 * partitions; new rooms spread over all; every replica follows the stored
 * count. Lowering is refused (409 SG_ERR_PARTITIONS_LOWERED).
 * `GET|PUT /v1/admin/log-format`: the log's write format, raised the same way.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { MAX_PARTITIONS } from '../../core/position.js';
import { adminAuth } from '../auth.js';
import type { HttpContext } from '../context.js';
import { errors } from '../schemas.js';

const LogFormat = Type.Object({ format: Type.Union([Type.Literal(1), Type.Literal(2), Type.Literal(3)]) }, { additionalProperties: false });
const Partitions = Type.Object({ partitions: Type.Integer({ minimum: 1, maximum: MAX_PARTITIONS }) }, { additionalProperties: false });

export function registerPartitionRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const onRequest = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens });
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

  // The write format gate: an existing log keeps writing format 1 (what older builds read) until raised.
  app.get(
    '/v1/admin/log-format',
    { onRequest, schema: { ...common, summary: "The log's stored write format (1: what builds before format 2 read; 2: one field; 3: one field, fewer bytes)", response: { 200: LogFormat, ...errors(401, 403) } } },
    async () => ({ format: await ctx.log.writeFormat() }),
  );

  app.put<{ Body: Static<typeof LogFormat> }>(
    '/v1/admin/log-format',
    {
      onRequest,
      schema: {
        ...common,
        summary: "Raises the log's write format (never lowers it: 409 SG_ERR_LOG_FORMAT_LOWERED); answers the format now stored",
        description: 'Raise it once every replica runs a build that reads the new format: every replica follows the stored format within a lease period.',
        body: LogFormat,
        response: { 200: LogFormat, ...errors(400, 401, 403, 409) },
      },
    },
    async (request) => ({ format: await ctx.log.raiseWriteFormat(request.body.format) }),
  );
}
