/**
 * Route schemas, built from the shared TypeBox schemas of src/core so the API,
 * the event log and the OpenAPI document agree. Response schemas document the
 * API; responses are serialised with JSON.stringify (see app.ts).
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ERROR_TABLE } from '../core/errors.js';
import { Content, Relations, RoomId } from '../core/event.js';
import { RoomLink, RoomSpec } from '../core/ports.js';

/** The largest `limit` the log serves in one read. */
export const MAX_PAGE = 1000;

/**
 * The longest path parameter: room ids, user ids and txnIds are at most 128
 * characters. The router refuses longer ones before the schema sees them.
 */
export const MAX_PARAM_LENGTH = 128;

export const UserId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$', description: 'gateway user id' });
export const DeviceId = Type.String({ pattern: '^d[0-9a-f]{20}$', description: 'device id (minted by the gateway)' });
export const TxnId = Type.String({ pattern: '^[A-Za-z0-9._~-]{1,128}$', description: 'client transaction id, unique per device and room' });
export const EventId = Type.String({ minLength: 1, maxLength: 64, description: 'a gateway event id' });
const SyncCursorToken = Type.String({ minLength: 1, maxLength: 4096, description: 'a sync cursor (opaque)' });
const PositionToken = Type.String({ minLength: 1, maxLength: 4096, description: 'an event position: the `cursor` of an event or `next` of a page (opaque)' });

export const ErrorBody = Type.Object(
  {
    code: Type.Union(Object.keys(ERROR_TABLE).map((c) => Type.Literal(c))),
    message: Type.String(),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { description: 'every error: a stable code from the error table and a message' },
);

/** Error responses for a route, by status: documentation only. */
export function errors(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorBody]));
}

/** The event as clients see it: the log event without `idem` and internal ids; `unsigned.txnId` only for the device that sent it. */
export const EventView = Type.Object(
  {
    eventId: EventId,
    cursor: PositionToken,
    kind: Type.String(),
    room: RoomId,
    sender: Type.Object({}, { additionalProperties: true }),
    origin: Type.Object({}, { additionalProperties: true }),
    ts: Type.Object({}, { additionalProperties: true }),
    content: Type.Optional(Content),
    rel: Type.Optional(Relations),
    unsigned: Type.Optional(Type.Object({ txnId: Type.String() })),
  },
  { additionalProperties: true },
);

// --- device API

const Keys = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64, uniqueItems: true });
const strict = { additionalProperties: false } as const;

/** What a device sends: only adapters mark a message undecryptable (a device that cannot read something does not send it). */
const SendContent = Type.Omit(Content, ['undecryptable'], strict);

export const SendBody = Type.Union(
  [
    Type.Object({ kind: Type.Literal('message'), content: SendContent, rel: Type.Optional(Type.Pick(Relations, ['replyTo', 'thread'], strict)) }, strict),
    Type.Object({ kind: Type.Literal('edit'), content: SendContent, rel: Type.Required(Type.Pick(Relations, ['replaces'], strict)) }, strict),
    Type.Object({ kind: Type.Literal('retraction'), rel: Type.Required(Type.Pick(Relations, ['redacts'], strict)) }, strict),
    Type.Object(
      {
        kind: Type.Literal('reaction'),
        rel: Type.Required(Type.Pick(Relations, ['reactsTo'], strict)),
        reaction: Type.Object({ keys: Keys }, { ...strict, description: 'the full set of your reactions on the target after this one; [] removes them' }),
      },
      strict,
    ),
  ],
  { description: 'what to send; relations name event ids of the same room' },
);
export type SendBody = Static<typeof SendBody>;

export const SendParams = Type.Object({ room: RoomId, txnId: TxnId });
export const RoomParams = Type.Object({ room: RoomId });
export const SendResult = Type.Object({
  eventId: EventId,
  cursor: PositionToken,
  exceeds: Type.Optional(
    Type.Array(Type.Object({ endpoint: Type.String(), limit: Type.Integer({ description: 'UTF-8 bytes' }) }), {
      description: 'linked endpoints that cannot carry the whole body: they get it cut with a visible marker (README "Message size"); the log keeps it whole',
    }),
  ),
});

export const SyncQuery = Type.Object({
  since: Type.Optional(SyncCursorToken),
  timeout: Type.Integer({ minimum: 0, default: 0, description: 'ms to wait for an event when there is none (capped by the server)' }),
  limit: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 100 }),
});
export type SyncQuery = Static<typeof SyncQuery>;
export const SyncResult = Type.Object({
  events: Type.Array(EventView),
  next: SyncCursorToken,
  limited: Type.Boolean({ description: 'true when retention removed events after `since`' }),
});

export const MessagesQuery = Type.Object({
  from: Type.Optional(PositionToken),
  dir: Type.Union([Type.Literal('b'), Type.Literal('f')], { default: 'b' }),
  limit: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 50 }),
});
export type MessagesQuery = Static<typeof MessagesQuery>;
export const MessagesResult = Type.Object({
  events: Type.Array(EventView),
  next: Type.Optional(PositionToken),
  limited: Type.Boolean(),
});

export const TelemetryQuery = Type.Object({
  from: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'the `next` of the previous page (exclusive)' })),
  limit: Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 50 }),
});
export type TelemetryQuery = Static<typeof TelemetryQuery>;
export const TelemetryReading = Type.Object({
  id: Type.String({ description: 'the entry id (a telemetry cursor)' }),
  sender: Type.Object({ uid: Type.String(), proto: Type.String(), display: Type.Optional(Type.String()) }),
  ts: Type.Object({ received: Type.Integer(), origin: Type.Optional(Type.Integer()) }),
  topic: Type.Optional(Type.String()),
  contentType: Type.String(),
  payload: Type.String({ description: 'the reading as text; base64 when the content type ends in `;base64`' }),
});
export const TelemetryResult = Type.Object({
  readings: Type.Array(TelemetryReading, { description: 'newest first' }),
  next: Type.Optional(Type.String({ description: 'pass as `from` for older readings; absent at the end' })),
});

export const MarkerBody = Type.Object({ upTo: EventId }, strict);
export const MarkerResult = Type.Object({ upTo: Type.Union([EventId, Type.Null()]) });

export const RoomsResult = Type.Object({ rooms: Type.Array(Type.Object({ id: RoomId, name: Type.Optional(Type.String()) })) });
export const WhoAmI = Type.Object({ user: UserId, deviceId: DeviceId, display: Type.Optional(Type.String()) });

export const StreamQuery = Type.Object({
  since: Type.Optional(SyncCursorToken),
  telemetry: Type.Boolean({ default: false, description: 'also send the rooms\' telemetry readings that arrive from now on (WebSocket `{type:"telemetry",room,reading}`, SSE `event: telemetry`)' }),
  access_token: Type.Optional(Type.String({ maxLength: 512, description: 'for clients that cannot set headers (browsers)' })),
});
export type StreamQuery = Static<typeof StreamQuery>;

// --- admin API

export const UserBody = Type.Object({ id: UserId, display: Type.Optional(Type.String({ maxLength: 256 })) }, strict);
export type UserBody = Static<typeof UserBody>;
export const UserParams = Type.Object({ user: UserId });
export const UserRoomParams = Type.Object({ user: UserId, room: RoomId });
export const User = Type.Object({ id: UserId, display: Type.Optional(Type.String()), created: Type.Integer() });
export const Device = Type.Object({ deviceId: DeviceId, user: UserId, name: Type.Optional(Type.String()), created: Type.Integer() });
export const UserDetail = Type.Object({ user: User, devices: Type.Array(Device), rooms: Type.Array(RoomId) });

export const DeviceBody = Type.Object({ user: UserId, name: Type.Optional(Type.String({ maxLength: 256 })) }, strict);
export type DeviceBody = Static<typeof DeviceBody>;
export const DeviceParams = Type.Object({ device: DeviceId });
export const DeviceQuery = Type.Object({ user: Type.Optional(UserId) });
export const NewDevice = Type.Object({
  deviceId: DeviceId,
  user: UserId,
  name: Type.Optional(Type.String()),
  created: Type.Integer(),
  token: Type.String({ description: 'the bearer token; shown once, stored only as a hash' }),
});

export const RoomBody = Type.Object({ name: Type.Optional(Type.String({ maxLength: 256 })), links: Type.Optional(Type.Array(RoomLink, { maxItems: 64 })) }, strict);
export type RoomBody = Static<typeof RoomBody>;
export { RoomSpec };
export const RoomList = Type.Object({ rooms: Type.Array(RoomSpec) });

// --- operations

export const Health = Type.Object({ status: Type.Literal('ok') });
export const Readiness = Type.Object({
  /** degraded: the log answers, but some partitions do not (a Redis Cluster shard lost with no replica) */
  status: Type.Union([Type.Literal('ok'), Type.Literal('degraded'), Type.Literal('unavailable')]),
  /** with `degraded`: the partitions whose rooms cannot be read or written now */
  unavailablePartitions: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }))),
  code: Type.Optional(Type.String()),
  /** why not ready, in words (with a 503) */
  reason: Type.Optional(Type.String()),
  checks: Type.Record(Type.String(), Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.String()) })),
});
