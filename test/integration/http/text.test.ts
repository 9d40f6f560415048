/**
 * Text a client sends is stored as sent, or refused: on the Redis log, where
 * an ill-formed string would silently become U+FFFD.
 */
import { afterEach, describe, expect, it, inject } from 'vitest';
import { ERROR_TABLE } from '../../../src/core/errors.js';
import { testPrefix } from '../../harness/redis.js';
import { ADMIN_TOKEN, adminDevice, adminRoom, adminUser, expectStatus, makeLog, startApp, type ApiResponse, type TestApp } from './helpers.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

async function redisApp(): Promise<TestApp> {
  const t = await startApp({ log: makeLog({ redisUrl: inject('redisUrl'), prefix: testPrefix('http-text') }) });
  open.push(t);
  return t;
}

function expectTextInvalid(r: ApiResponse, what: string, where: string): void {
  expect({ what, status: r.status, code: r.body.code }).toEqual({ what, status: ERROR_TABLE.SG_ERR_TEXT_INVALID.status, code: 'SG_ERR_TEXT_INVALID' });
  expect(JSON.stringify(r.body.details), what).toContain(where);
}

describe('text in request bodies', () => {
  it('refuses a lone surrogate in any string of a body with SG_ERR_TEXT_INVALID, stores nothing, and stores well-formed text exactly as sent', async () => {
    const t = await redisApp();
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const { token } = await adminDevice(c, 'alice');
    const sent = expectStatus(await c.request('PUT', '/v1/rooms/ops/send/t0', { token, body: { kind: 'message', content: { body: 'target' } } }), 200);

    // JSON escapes are how a lone surrogate arrives: raw bodies keep them as the client wrote them.
    const cases: Array<[string, string, string, string, string]> = [
      ['message body', 'PUT', '/v1/rooms/ops/send/t1', '{"kind":"message","content":{"body":"a\\ud800b"}}', '/content/body'],
      ['a low surrogate alone', 'PUT', '/v1/rooms/ops/send/t2', '{"kind":"message","content":{"body":"\\uDC00"}}', '/content/body'],
      ['a pair in the wrong order', 'PUT', '/v1/rooms/ops/send/t3', '{"kind":"message","content":{"body":"\\udc4d\\ud83d"}}', '/content/body'],
      ['formatted body', 'PUT', '/v1/rooms/ops/send/t4', '{"kind":"message","content":{"body":"x","format":"html","formatted":"<b>\\ud83d</b>"}}', '/content/formatted'],
      ['edit', 'PUT', '/v1/rooms/ops/send/t5', `{"kind":"edit","content":{"body":"\\ud800"},"rel":{"replaces":"${sent.body.eventId}"}}`, '/content/body'],
      ['reaction key', 'PUT', '/v1/rooms/ops/send/t6', `{"kind":"reaction","rel":{"reactsTo":"${sent.body.eventId}"},"reaction":{"keys":["\\ud83d"]}}`, '/reaction/keys/0'],
      ['an object key', 'PUT', '/v1/rooms/ops/send/t7', '{"kind":"message","content":{"body":"x","\\ud800":1}}', '/content'],
      ['user display name', 'POST', '/v1/admin/users', '{"id":"zed","display":"Z\\udfff"}', '/display'],
      ['device name', 'POST', '/v1/admin/devices', '{"user":"alice","name":"\\ud800 phone"}', '/name'],
      ['room name', 'PUT', '/v1/admin/rooms/lobby', '{"name":"L\\ud800","links":[]}', '/name'],
      ['room link option key', 'PUT', '/v1/admin/rooms/lobby', '{"links":[{"endpoint":"xmpp","target":"l@muc.example","options":{"\\ud800":"x"}}]}', '/links/0/options'],
    ];
    for (const [what, method, path, raw, where] of cases) {
      expectTextInvalid(await c.request(method, path, { token: path.startsWith('/v1/admin') ? ADMIN_TOKEN : token, raw }), what, where);
    }
    expect((await t.log.read(undefined, { rooms: 'all', limit: 100 })).events.map((e) => e.eventId)).toEqual([sent.body.eventId]);
    expect((await c.request('GET', '/v1/admin/users/zed', { token: ADMIN_TOKEN })).status).toBe(404);
    expect((await c.request('GET', '/v1/admin/rooms/lobby', { token: ADMIN_TOKEN })).status).toBe(404);

    // Escaped pairs (what ASCII-only JSON encoders send), U+FFFD and non-BMP characters are stored as sent.
    const text = 'thumbs \ud83d\udc4d replacement \ufffd e\u0301 clef \ud834\udd1e';
    const raw = `{"kind":"message","content":{"body":"thumbs \\ud83d\\udc4d replacement \\ufffd e\\u0301 clef \\uD834\\uDD1E"}}`;
    const ok = expectStatus(await c.request('PUT', '/v1/rooms/ops/send/t8', { token, raw }), 200);
    const stored = await t.log.getEvent('ops', ok.body.eventId);
    expect(stored?.kind === 'message' ? stored.content.body : stored).toBe(text);
  });

  it('refuses a body that is not UTF-8 with SG_ERR_TEXT_INVALID instead of storing U+FFFD', async () => {
    const t = await redisApp();
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const { token } = await adminDevice(c, 'alice');
    const bodyWith = (bytes: number[]) => Buffer.concat([Buffer.from('{"kind":"message","content":{"body":"a'), Buffer.from(bytes), Buffer.from('b"}}')]);
    for (const [what, bytes] of [
      ['a byte that is never UTF-8', [0xff]],
      ['a truncated sequence', [0xe2, 0x82]],
      ['an encoded surrogate (CESU-8)', [0xed, 0xa0, 0x80]],
      ['latin1 é', [0xe9]],
    ] as const) {
      const r = await t.app.inject({
        method: 'PUT',
        url: `/v1/rooms/ops/send/u${bytes.join('-')}`,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        payload: bodyWith([...bytes]),
      });
      const body = r.json<{ code: string }>();
      expect({ what, status: r.statusCode, code: body.code }).toEqual({ what, status: 400, code: 'SG_ERR_TEXT_INVALID' });
    }
    expect((await t.log.read(undefined, { rooms: 'all', limit: 100 })).events).toEqual([]);
  });
});

describe('the size rule at send time', () => {
  it('tells the sender which linked endpoints cannot carry the whole body, and stores it whole', async () => {
    const t = await startApp({ log: makeLog({ redisUrl: inject('redisUrl'), prefix: testPrefix('http-size') }), config: { bodyLimitBytes: 256 * 1024 }, deps: { bodyLimits: { matrix: 60_000, mqtt: 258_048 } } });
    open.push(t);
    const c = t.client;
    expectStatus(
      await c.request('PUT', '/v1/admin/rooms/big', {
        token: ADMIN_TOKEN,
        body: {
          links: [
            { endpoint: 'matrix', target: '!a:hs' },
            { endpoint: 'matrix', target: '!b:hs' },
            { endpoint: 'mqtt', target: 'sg/big' },
          ],
        },
      }),
      200,
    );
    await adminUser(c, 'alice', ['big']);
    const { token } = await adminDevice(c, 'alice');
    // 33,000 Cyrillic characters: within the API's character limit, 66,000 bytes of UTF-8.
    const body = 'ж'.repeat(33_000);
    const big = expectStatus(await c.request('PUT', '/v1/rooms/big/send/s1', { token, body: { kind: 'message', content: { body } } }), 200);
    expect(big.body['exceeds']).toEqual([{ endpoint: 'matrix', limit: 60_000 }]);
    const stored = await t.log.getEvent('big', big.body.eventId);
    expect(stored?.kind === 'message' && stored.content.body).toBe(body);
    const small = expectStatus(await c.request('PUT', '/v1/rooms/big/send/s2', { token, body: { kind: 'message', content: { body: 'short' } } }), 200);
    expect(small.body['exceeds']).toBeUndefined();
  });
});
