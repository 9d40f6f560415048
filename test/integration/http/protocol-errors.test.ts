/**
 * Errors raised before a route runs — by the router, the body parser or
 * Node's HTTP parser — answer with our error shape and a code of the table,
 * and a client still sending a refused body reads the answer rather than a
 * reset. Over `inject`, and over real sockets where the socket matters.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ERROR_TABLE, type ErrorCode } from '../../../src/core/errors.js';
import { ADMIN_TOKEN, adminDevice, adminRoom, adminUser, expectStatus, startApp, type TestApp } from './helpers.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

async function app(options: Parameters<typeof startApp>[0] = {}): Promise<TestApp> {
  const a = await startApp(options);
  open.push(a);
  return a;
}

/** Exactly our error shape: a code of the table with its status, a message, nothing of fastify's. */
function expectOurError(r: { status: number; text: string }, code: ErrorCode, what: string): void {
  const body = JSON.parse(r.text) as Record<string, unknown>;
  expect({ what, status: r.status, code: body['code'] }).toEqual({ what, status: ERROR_TABLE[code].status, code });
  expect(Object.keys(body).filter((k) => !['code', 'message', 'details'].includes(k)), what).toEqual([]);
  expect(typeof body['message'], what).toBe('string');
}

const message = { kind: 'message', content: { body: 'x' } };

describe('router errors', () => {
  it('takes room ids, user ids and txnIds of up to the 128 characters the schemas allow; longer ones are SG_ERR_REQUEST_INVALID', async () => {
    const t = await app();
    const c = t.client;
    for (const n of [101, 128]) {
      const room = `r${'o'.repeat(n - 1)}`;
      const user = `u${'s'.repeat(n - 1)}`;
      const txnId = `t${'x'.repeat(n - 1)}`;
      await adminRoom(c, room);
      expectStatus(await c.request('GET', `/v1/admin/rooms/${room}`, { token: ADMIN_TOKEN }), 200);
      await adminUser(c, user, [room]);
      expectStatus(await c.request('GET', `/v1/admin/users/${user}`, { token: ADMIN_TOKEN }), 200);
      const device = await adminDevice(c, user);
      const first = expectStatus(await c.request('PUT', `/v1/rooms/${room}/send/${txnId}`, { token: device.token, body: message }), 200);
      const again = expectStatus(await c.request('PUT', `/v1/rooms/${room}/send/${txnId}`, { token: device.token, body: message }), 200);
      expect(again.body.eventId).toBe(first.body.eventId);
      expect(expectStatus(await c.request('GET', `/v1/rooms/${room}/messages`, { token: device.token }), 200).body.events).toHaveLength(1);
    }
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const alice = await adminDevice(c, 'alice');
    for (const [path, token] of [
      [`/v1/rooms/ops/send/${'t'.repeat(129)}`, alice.token],
      [`/v1/rooms/ops/send/${'t'.repeat(5000)}`, alice.token],
      [`/v1/rooms/${'r'.repeat(129)}/send/t1`, alice.token],
      [`/v1/admin/users/${'u'.repeat(129)}`, ADMIN_TOKEN],
    ] as const) {
      const r = await c.request(path.startsWith('/v1/admin') ? 'GET' : 'PUT', path, { token, body: message });
      expectOurError(r, 'SG_ERR_REQUEST_INVALID', path.slice(0, 40));
      expect(r.body.message).not.toContain('t'.repeat(129));
    }
  });

  it('answers bad percent-encoding, wrong content types and bodies fastify refuses with our codes', async () => {
    const t = await app();
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const { token } = await adminDevice(c, 'alice');
    const cases: Array<[string, string, string, Parameters<typeof c.request>[2], ErrorCode]> = [
      ['bad escape in a parameter', 'PUT', '/v1/rooms/ops/send/%zz', { token, body: message }, 'SG_ERR_REQUEST_INVALID'],
      ['bad escape in a static segment', 'GET', '/v1/who%zzami', { token }, 'SG_ERR_REQUEST_INVALID'],
      ['an escaped lone surrogate (not UTF-8) in the txnId', 'PUT', '/v1/rooms/ops/send/t%ED%A0%80', { token, body: message }, 'SG_ERR_REQUEST_INVALID'],
      ['invalid UTF-8 in the room id', 'PUT', '/v1/rooms/o%FFps/send/t1', { token, body: message }, 'SG_ERR_REQUEST_INVALID'],
      ['an unsupported content type', 'PUT', '/v1/rooms/ops/send/t2', { token, raw: '<m/>', headers: { 'content-type': 'application/xml' } }, 'SG_ERR_MEDIA_TYPE_UNSUPPORTED'],
      ['an empty JSON body', 'PUT', '/v1/rooms/ops/send/t3', { token, raw: '' }, 'SG_ERR_REQUEST_INVALID'],
      ['invalid JSON', 'PUT', '/v1/rooms/ops/send/t4', { token, raw: '{"kind":' }, 'SG_ERR_REQUEST_INVALID'],
      ['a __proto__ key', 'PUT', '/v1/rooms/ops/send/t5', { token, raw: '{"__proto__":{"x":1},"kind":"message","content":{"body":"x"}}' }, 'SG_ERR_REQUEST_INVALID'],
      ['a schema violation', 'PUT', '/v1/rooms/ops/send/t6', { token, body: { kind: 'typing' } }, 'SG_ERR_REQUEST_INVALID'],
      ['an unknown route', 'GET', '/v1/no/such/route', { token }, 'SG_ERR_NOT_FOUND'],
      ['a method the route does not take', 'DELETE', '/v1/whoami', { token }, 'SG_ERR_NOT_FOUND'],
      ['a method no route takes', 'PROPFIND', '/v1/whoami', { token }, 'SG_ERR_NOT_FOUND'],
    ];
    for (const [what, method, path, options, code] of cases) expectOurError(await c.request(method, path, options), code, what);
    expect((await t.log.read(undefined, { rooms: 'all', limit: 10 })).events).toEqual([]);
  });
});

// --- real sockets

interface RawAnswer {
  /** everything the server sent, as latin1 */
  readonly text: string;
  /** the socket error the client saw, if any */
  readonly error: string | undefined;
}

/**
 * A client that writes its whole request first — pausing between chunks like
 * a slow uplink — and only then reads the answer, as simple device clients do.
 */
async function sendThenRead(url: string, head: string, chunks: readonly Buffer[] = []): Promise<RawAnswer> {
  const socket = new net.Socket();
  socket.pause();
  let text = '';
  let error: string | undefined;
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const { hostname, port } = new URL(url);
  await new Promise<void>((resolve) => socket.connect(Number(port), hostname, resolve));
  const write = (data: string | Buffer) => new Promise<void>((resolve) => socket.write(data, () => resolve()));
  await write(head);
  for (const chunk of chunks) {
    if (socket.destroyed) break;
    await write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  socket.resume();
  // The answers here close the connection or are complete: read until the server closes, or the client gives up.
  const deadline = setTimeout(() => socket.destroy(), 20_000);
  await closed;
  clearTimeout(deadline);
  return { text, error };
}

/** The status and the JSON body of the first response in a raw answer. */
function firstResponse(answer: RawAnswer): { status: number; text: string } {
  const match = /^HTTP\/1\.1 (\d{3}) [^\r]*\r\n([\s\S]*?)\r\n\r\n/.exec(answer.text);
  if (!match) throw new Error(`no HTTP response (socket error ${answer.error ?? 'none'}): ${JSON.stringify(answer.text.slice(0, 200))}`);
  const length = Number(/content-length: (\d+)/i.exec(match[2] ?? '')?.[1]);
  const start = match[0].length;
  return { status: Number(match[1]), text: answer.text.slice(start, start + length) };
}

describe('over real sockets', () => {
  const LIMIT = 64 * 1024;

  it('a client that sends all of an over-limit body before reading gets the 413 with our code, by Content-Length and chunked', async () => {
    const t = await app({ listen: true, config: { bodyLimitBytes: LIMIT } });
    await adminRoom(t.client, 'ops');
    await adminUser(t.client, 'alice', ['ops']);
    const { token } = await adminDevice(t.client, 'alice');
    const chunk = Buffer.alloc(16 * 1024, 'a');
    const chunks = Array.from({ length: (3 * LIMIT) / chunk.length }, () => chunk);
    const head = (framing: string) =>
      `PUT /v1/rooms/ops/send/big HTTP/1.1\r\nHost: syncgate\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;
    const asChunked = [...chunks.map((c) => Buffer.concat([Buffer.from(`${c.length.toString(16)}\r\n`), c, Buffer.from('\r\n')])), Buffer.from('0\r\n\r\n')];

    for (const [what, answer] of [
      ['Content-Length', await sendThenRead(t.url ?? '', head(`Content-Length: ${3 * LIMIT}`), chunks)],
      ['chunked', await sendThenRead(t.url ?? '', head('Transfer-Encoding: chunked'), asChunked)],
    ] as const) {
      expectOurError(firstResponse(answer), 'SG_ERR_BODY_TOO_LARGE', what);
      expect(answer.error, what).toBeUndefined();
    }
    expect(expectStatus(await t.client.request('GET', '/v1/rooms/ops/messages', { token }), 200).body.events).toEqual([]);
  });

  it("answers what Node's HTTP parser refuses with our codes", async () => {
    const t = await app({ listen: true, config: { bodyLimitBytes: LIMIT } });
    const url = t.url ?? '';
    const cases: Array<[string, string, ErrorCode]> = [
      ['not HTTP', 'HELLO THERE\r\n\r\n', 'SG_ERR_REQUEST_INVALID'],
      ['a bad Content-Length', 'PUT /v1/rooms/ops/send/t1 HTTP/1.1\r\nHost: syncgate\r\nContent-Length: many\r\n\r\n', 'SG_ERR_REQUEST_INVALID'],
      ['headers over the limit', `GET /healthz HTTP/1.1\r\nHost: syncgate\r\nX-Filler: ${'f'.repeat(32 * 1024)}\r\n\r\n`, 'SG_ERR_HEADERS_TOO_LARGE'],
      [
        'chunk extensions over the limit',
        `PUT /v1/rooms/ops/send/t1 HTTP/1.1\r\nHost: syncgate\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1;${'e'.repeat(32 * 1024)}\r\nx\r\n0\r\n\r\n`,
        'SG_ERR_BODY_TOO_LARGE',
      ],
    ];
    for (const [what, request, code] of cases) expectOurError(firstResponse(await sendThenRead(url, request)), code, what);
  });
});
