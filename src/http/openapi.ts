/**
 * The OpenAPI document as client generators want it: an operationId per
 * route, the error shape once in components (one schema per status, listing
 * the codes that status carries), 429 and 503 with their headers, the live
 * stream as WebSocket upgrade and SSE, /metrics as text/plain, and examples
 * on send and sync. Applied to what @fastify/swagger builds from the routes.
 */
import { ERROR_TABLE, type ErrorSpec } from '../core/errors.js';

/** operationId by "METHOD path" (OpenAPI path syntax); a route missing here gets one derived from its method and path. */
const OPERATION_IDS: Readonly<Record<string, string>> = {
  'GET /healthz': 'getHealth',
  'GET /readyz': 'getReadiness',
  'GET /metrics': 'getMetrics',
  'GET /v1/admin/status': 'getStatus',
  'POST /v1/admin/users': 'createUser',
  'GET /v1/admin/users': 'listUsers',
  'GET /v1/admin/users/{user}': 'getUser',
  'DELETE /v1/admin/users/{user}': 'deleteUser',
  'PUT /v1/admin/users/{user}/rooms/{room}': 'grantRoom',
  'DELETE /v1/admin/users/{user}/rooms/{room}': 'revokeRoom',
  'POST /v1/admin/devices': 'createDevice',
  'GET /v1/admin/devices': 'listDevices',
  'DELETE /v1/admin/devices/{device}': 'deleteDevice',
  'GET /v1/admin/rooms': 'listRooms',
  'PUT /v1/admin/rooms/{room}': 'putRoom',
  'GET /v1/admin/rooms/{room}': 'getRoom',
  'DELETE /v1/admin/rooms/{room}': 'deleteRoom',
  'GET /v1/admin/dead-letters': 'listDeadLetters',
  'POST /v1/admin/dead-letters/replay': 'replayDeadLetters',
  'POST /v1/admin/dead-letters/drop': 'dropDeadLetters',
  'GET /v1/whoami': 'whoAmI',
  'GET /v1/rooms': 'listMyRooms',
  'PUT /v1/rooms/{room}/send/{txnId}': 'sendEvent',
  'GET /v1/sync': 'sync',
  'GET /v1/rooms/{room}/messages': 'getMessages',
  'GET /v1/rooms/{room}/telemetry': 'getTelemetry',
  'PUT /v1/rooms/{room}/markers': 'putMarker',
  'GET /v1/rooms/{room}/markers': 'getMarkers',
  'GET /v1/stream': 'stream',
  'GET /v1/admin/rooms/{room}/live': 'followRoomTimeline',
};

export function operationIdOf(method: string, path: string): string {
  const known = OPERATION_IDS[`${method.toUpperCase()} ${path}`];
  if (known) return known;
  const words = path
    .split('/')
    .filter((s) => s !== '' && s !== 'v1')
    .map((s) => s.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : '')));
  return [method.toLowerCase(), ...words.map((w) => w.charAt(0).toUpperCase() + w.slice(1))].join('');
}

const ERROR_SCHEMA = {
  type: 'object',
  description: 'Every error: a stable code from the error table (README "Errors"), a message, and sometimes details',
  required: ['code', 'message'],
  properties: {
    code: { type: 'string' },
    message: { type: 'string' },
    details: { type: 'object', additionalProperties: true },
  },
} as const;

/** codes of the command line and the process, never in an API answer */
const NOT_HTTP = /^SG_ERR_(CLI_|GATEWAY_|CONFIG_|HTTP_LISTEN$)/;

/** the live (non-retired) codes a status carries in API answers */
function codesOf(status: number): string[] {
  return Object.entries(ERROR_TABLE as Record<string, ErrorSpec>)
    .filter(([code, spec]) => spec.status === status && spec.retired !== true && !NOT_HTTP.test(code))
    .map(([code]) => code);
}

const RETRY_AFTER = { description: 'seconds to wait before retrying', schema: { type: 'integer', minimum: 0 } };
const RATE_HEADERS = {
  'Retry-After': RETRY_AFTER,
  'RateLimit-Limit': { description: 'requests allowed per window', schema: { type: 'integer' } },
  'RateLimit-Remaining': { description: 'requests left in this window', schema: { type: 'integer' } },
  'RateLimit-Reset': { description: 'seconds until the window resets', schema: { type: 'integer' } },
};

const SEND_EXAMPLE = { kind: 'message', content: { body: 'deploy done', format: 'html', formatted: 'deploy <b>done</b>' } };
const SYNC_EXAMPLE = {
  events: [
    {
      eventId: '01M96JACXC0B0000000',
      cursor: 'AhALrOeU6aQ0AE6RvYo',
      kind: 'message',
      room: 'ops',
      sender: { uid: 'alice', proto: 'api', native: 'alice', auth: 'api-token', display: 'Alice' },
      origin: { proto: 'api', via: 'api', ids: {} },
      ts: { received: 1796590613419 },
      content: { body: 'deploy done' },
    },
  ],
  next: 'AhALrOeU6aQ0AE6RvYo',
  limited: false,
};

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === 'object' && v !== null ? (v as Json) : {});

/** Rewrites the document @fastify/swagger produced (see the module comment). */
export function refineOpenApi(input: Json): Json {
  const doc = structuredClone(input);
  const components = obj((doc['components'] ??= {}));
  const schemas = obj((components['schemas'] ??= {}));
  schemas['Error'] = ERROR_SCHEMA;
  const used = new Set<number>();

  for (const [path, item] of Object.entries(obj(doc['paths']))) {
    for (const [method, raw] of Object.entries(obj(item))) {
      const op = obj(raw);
      op['operationId'] = operationIdOf(method, path);
      const responses = obj((op['responses'] ??= {}));
      if (path.startsWith('/v1/')) {
        // every /v1 request needs the log: while it is unreachable the answer is 503 at once
        responses['503'] ??= {};
        const deviceRoute = !path.startsWith('/v1/admin/');
        if (deviceRoute) responses['429'] ??= {};
      }
      for (const code of Object.keys(responses)) {
        const status = Number(code);
        if (!(status >= 400) || path === '/readyz') continue;
        used.add(status);
        const codes = codesOf(status);
        const r: Json = {
          description: codes.length > 0 ? `Error: ${codes.join(', ')}` : 'Error',
          content: { 'application/json': { schema: { $ref: `#/components/schemas/Error${status}` } } },
        };
        if (status === 429) r['headers'] = RATE_HEADERS;
        if (status === 503) r['headers'] = { 'Retry-After': RETRY_AFTER };
        responses[code] = r;
      }
      if (path === '/metrics') {
        responses['200'] = { description: 'Prometheus text exposition format', content: { 'text/plain; version=0.0.4': { schema: { type: 'string' } } } };
      }
      if (path === '/v1/stream') {
        responses['101'] = { description: 'WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`): frames as described above' };
        responses['200'] = {
          description: 'Server-Sent Events (`Accept: text/event-stream`): `id` = the cursor after the event, `data` = the event; `ready`, `limited`, `heartbeat`, `telemetry` and `close` are named events',
          content: { 'text/event-stream': { schema: { type: 'string' } } },
        };
      }
      if (path === '/v1/admin/rooms/{room}/live') {
        responses['200'] = {
          description: 'Server-Sent Events: `snapshot`, `entry`, `deliveries`, `heartbeat` and a last `close`, each a named event with JSON `data` (see above)',
          content: { 'text/event-stream': { schema: { type: 'string' } } },
        };
      }
      if (path === '/v1/rooms/{room}/send/{txnId}') {
        const body = obj(obj(obj(op['requestBody'])['content'])['application/json']);
        body['example'] = SEND_EXAMPLE;
        const ok = obj(obj(obj(responses['200'])['content'])['application/json']);
        ok['example'] = { eventId: '01M96JACXC0B0000000', cursor: 'AhALrOeU6aQ0AE6RvYo' };
      }
      if (path === '/v1/sync') {
        const ok = obj(obj(obj(responses['200'])['content'])['application/json']);
        ok['example'] = SYNC_EXAMPLE;
      }
    }
  }
  for (const status of [...used].sort()) {
    const codes = codesOf(status);
    schemas[`Error${status}`] = {
      allOf: [{ $ref: '#/components/schemas/Error' }, ...(codes.length > 0 ? [{ type: 'object', properties: { code: { type: 'string', enum: codes } } }] : [])],
    };
  }
  return doc;
}
