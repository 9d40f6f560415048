/**
 * GET /v1/media/:endpoint/:id — a file an adapter made available to the
 * room's other protocols under an id it put in an attachment URL (a Matrix
 * encrypted attachment, decrypted on each request; adapters/matrix/crypto/media.ts).
 * No bearer token: XMPP and MQTT clients fetch attachment URLs as they get
 * them. The id is an unguessable capability that only the room's events
 * carry, and the adapter answers only while the room is still linked.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { MediaFile } from '../../core/adapter.js';
import { SyncgateError } from '../../core/errors.js';
import type { HttpContext } from '../context.js';
import { ErrorBody } from '../schemas.js';

const MediaParams = Type.Object({
  endpoint: Type.String({ minLength: 1, maxLength: 128 }),
  id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' }),
});

export function registerMediaRoutes(app: FastifyInstance, ctx: HttpContext): void {
  app.get<{ Params: Static<typeof MediaParams> }>(
    '/v1/media/:endpoint/:id',
    {
      schema: {
        tags: ['operations'],
        summary: 'A file bridged from an end-to-end encrypted room (its attachment URL): no token, the URL is the capability',
        params: MediaParams,
        response: { 404: ErrorBody, 502: ErrorBody },
      },
    },
    async (request, reply) => {
      const { endpoint, id } = request.params;
      let file: MediaFile | undefined;
      try {
        file = await ctx.media?.(endpoint, id);
      } catch (err) {
        request.log.warn({ err, endpoint }, 'media not served');
        throw new SyncgateError('SG_ERR_MEDIA_UNAVAILABLE', err instanceof Error ? err.message : String(err));
      }
      if (!file) throw new SyncgateError('SG_ERR_NOT_FOUND', 'no such file');
      const name = file.name !== undefined ? `; filename*=UTF-8''${encodeURIComponent(file.name)}` : '';
      // Never rendered by a browser as the gateway's own page: a file from a room is untrusted content.
      return reply
        .header('content-type', file.contentType)
        .header('content-disposition', `attachment${name}`)
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', "default-src 'none'; sandbox")
        .header('cache-control', 'private, no-store')
        .send(Buffer.from(file.data));
    },
  );
}
