/**
 * The admin API (admin bearer token): users, devices and their tokens, room
 * grants, and rooms with their links. Everything is stored in the log
 * backend, so every replica sees a change without a restart.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { SyncgateError } from '../../core/errors.js';
import type { RoomSpec } from '../../core/ports.js';
import { adminAuth } from '../auth.js';
import type { HttpContext } from '../context.js';
import {
  Device,
  DeviceBody,
  DeviceParams,
  DeviceQuery,
  NewDevice,
  RoomBody,
  RoomList,
  RoomParams,
  RoomSpec as RoomSpecSchema,
  User,
  UserBody,
  UserDetail,
  UserParams,
  UserRoomParams,
  errors,
} from '../schemas.js';

const security = [{ bearer: [] }];
const adminErrors = (...extra: number[]) => errors(400, 401, 403, ...extra);

export function registerAdminRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const { directory } = ctx;
  const onRequest = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens });
  const tags = ['admin'];

  // --- status

  app.get(
    '/v1/admin/status',
    {
      onRequest,
      schema: {
        tags,
        security,
        summary: "This replica's view: the log, each adapter's state (active here or standby, the replica holding its connection, connected, ready, last error and when, linked rooms, joined rooms in its detail, delivery lag), and the replicas with their version and configuration hash",
        description:
          "Each adapter's `rates` (`inPerSecond`, `outPerSecond`) are the whole deployment's over the last ~10 s (this replica's measured now plus the others' as last published), `replicaRates` this replica's alone; `linkRates` the same per link.",
        response: {
          200: Type.Object({
            log: Type.Object({
              backend: Type.String(),
              durable: Type.Boolean(),
              available: Type.Boolean(),
              /** partitions the store cannot serve now (a Redis Cluster shard lost with no replica) */
              unavailablePartitions: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }))),
            }),
            adapters: Type.Record(Type.String(), Type.Unknown()),
            replicas: Type.Optional(
              Type.Array(
                Type.Object({ replicaId: Type.String(), version: Type.String(), configHash: Type.String(), startedAt: Type.Integer(), seenAt: Type.Integer(), drift: Type.Boolean() }),
                { description: 'replicas seen in the last three lease periods; `drift`: its configuration differs from most' },
              ),
            ),
            linkRates: Type.Optional(
              Type.Array(Type.Object({ room: Type.String(), endpoint: Type.String(), inPerSecond: Type.Number(), outPerSecond: Type.Number() }), {
                description:
                  'events in (appended from the adapter) and out (delivered to it) per second over the last ~10 s on each link with traffic, all replicas together (each replica publishes its own with its replica record every 5 s)',
              }),
            ),
          }),
          ...adminErrors(),
        },
      },
    },
    async () =>
      ctx.status
        ? ctx.status()
        : { log: { backend: ctx.log.info.backend, durable: ctx.log.info.durable, available: ctx.log.available, unavailablePartitions: await ctx.log.unavailablePartitions() }, adapters: {} },
  );

  // --- users

  app.post<{ Body: Static<typeof UserBody> }>(
    '/v1/admin/users',
    { onRequest, schema: { tags, security, summary: 'Create a user', body: UserBody, response: { 201: User, ...adminErrors(409) } } },
    async (request, reply) => reply.code(201).send(await directory.createUser(request.body.id, request.body.display)),
  );

  app.get(
    '/v1/admin/users',
    { onRequest, schema: { tags, security, summary: 'List users', response: { 200: Type.Object({ users: Type.Array(User) }), ...adminErrors() } } },
    async () => ({ users: await directory.listUsers() }),
  );

  app.get<{ Params: Static<typeof UserParams> }>(
    '/v1/admin/users/:user',
    { onRequest, schema: { tags, security, summary: 'A user with its devices and granted rooms', params: UserParams, response: { 200: UserDetail, ...adminErrors(404) } } },
    async (request) => {
      const user = await directory.requireUser(request.params.user);
      const [devices, rooms] = await Promise.all([directory.listDevices(user.id), directory.grants(user.id)]);
      return { user, devices, rooms };
    },
  );

  app.delete<{ Params: Static<typeof UserParams> }>(
    '/v1/admin/users/:user',
    { onRequest, schema: { tags, security, summary: 'Delete a user, its devices and grants', params: UserParams, response: { 204: Type.Null(), ...adminErrors(404) } } },
    async (request, reply) => {
      if (!(await directory.deleteUser(request.params.user))) throw new SyncgateError('SG_ERR_USER_UNKNOWN', request.params.user);
      return reply.code(204).send();
    },
  );

  // --- grants

  app.put<{ Params: Static<typeof UserRoomParams> }>(
    '/v1/admin/users/:user/rooms/:room',
    { onRequest, schema: { tags, security, summary: 'Grant a room to a user (all its devices)', params: UserRoomParams, response: { 204: Type.Null(), ...adminErrors(404) } } },
    async (request, reply) => {
      await directory.grant(request.params.user, request.params.room);
      return reply.code(204).send();
    },
  );

  app.delete<{ Params: Static<typeof UserRoomParams> }>(
    '/v1/admin/users/:user/rooms/:room',
    { onRequest, schema: { tags, security, summary: 'Revoke a room grant', params: UserRoomParams, response: { 204: Type.Null(), ...adminErrors(404) } } },
    async (request, reply) => {
      if (!(await directory.revoke(request.params.user, request.params.room))) {
        throw new SyncgateError('SG_ERR_NOT_FOUND', `grant of ${request.params.room} to ${request.params.user}`);
      }
      return reply.code(204).send();
    },
  );

  // --- devices

  app.post<{ Body: Static<typeof DeviceBody> }>(
    '/v1/admin/devices',
    {
      onRequest,
      schema: { tags, security, summary: 'Create a device; its token is in this response only', body: DeviceBody, response: { 201: NewDevice, ...adminErrors(404) } },
    },
    async (request, reply) => reply.code(201).header('cache-control', 'no-store').send(await directory.createDevice(request.body.user, request.body.name)),
  );

  app.get<{ Querystring: Static<typeof DeviceQuery> }>(
    '/v1/admin/devices',
    { onRequest, schema: { tags, security, summary: 'List devices (never their tokens)', querystring: DeviceQuery, response: { 200: Type.Object({ devices: Type.Array(Device) }), ...adminErrors() } } },
    async (request) => ({ devices: await directory.listDevices(request.query.user) }),
  );

  app.delete<{ Params: Static<typeof DeviceParams> }>(
    '/v1/admin/devices/:device',
    { onRequest, schema: { tags, security, summary: 'Delete a device: its token stops working', params: DeviceParams, response: { 204: Type.Null(), ...adminErrors(404) } } },
    async (request, reply) => {
      if (!(await directory.deleteDevice(request.params.device))) throw new SyncgateError('SG_ERR_NOT_FOUND', `device ${request.params.device}`);
      return reply.code(204).send();
    },
  );

  // --- rooms and links

  app.get(
    '/v1/admin/rooms',
    { onRequest, schema: { tags, security, summary: 'List rooms with their links', response: { 200: RoomList, ...adminErrors() } } },
    async () => ({ rooms: await ctx.log.rooms.list() }),
  );

  app.put<{ Params: Static<typeof RoomParams>; Body: Static<typeof RoomBody> }>(
    '/v1/admin/rooms/:room',
    { onRequest, schema: { tags, security, summary: 'Create or replace a room and its links', params: RoomParams, body: RoomBody, response: { 200: RoomSpecSchema, ...adminErrors() } } },
    async (request) => {
      const spec: RoomSpec = {
        id: request.params.room,
        links: request.body.links ?? [],
        ...(request.body.name !== undefined ? { name: request.body.name } : {}),
      };
      const problems = ctx.validateRoom?.(spec) ?? [];
      if (problems.length > 0) throw new SyncgateError('SG_ERR_ROOM_INVALID', problems[0], { problems });
      const refused = (await ctx.checkLinks?.(spec)) ?? [];
      if (refused.length > 0) {
        const list = refused.map((r) => `/links: ${r.endpoint} ${r.target}: ${r.detail}`);
        throw new SyncgateError(refused[0]?.reason === 'unencrypted' ? 'SG_ERR_ROOM_NOT_ENCRYPTED' : 'SG_ERR_ROOM_ENCRYPTED', list[0] ?? 'refused', { problems: list });
      }
      await ctx.log.rooms.put(spec);
      return spec;
    },
  );

  app.get<{ Params: Static<typeof RoomParams> }>(
    '/v1/admin/rooms/:room',
    { onRequest, schema: { tags, security, summary: 'A room and its links', params: RoomParams, response: { 200: RoomSpecSchema, ...adminErrors(404) } } },
    async (request) => {
      const spec = await ctx.log.rooms.get(request.params.room);
      if (!spec) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', request.params.room);
      return spec;
    },
  );

  app.delete<{ Params: Static<typeof RoomParams> }>(
    '/v1/admin/rooms/:room',
    {
      onRequest,
      schema: { tags, security, summary: 'Delete a room: new events are refused; stored events stay until retention removes them', params: RoomParams, response: { 204: Type.Null(), ...adminErrors(404) } },
    },
    async (request, reply) => {
      if (!(await ctx.log.rooms.delete(request.params.room))) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', request.params.room);
      return reply.code(204).send();
    },
  );
}
