/**
 * What a real homeserver (Synapse) does that users met (issue 12), against
 * the homeserver fake, which behaves like Synapse in these ways.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TRUNCATION_MARKER } from '../../../src/core/text.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { memoryMatrixState } from '../../../adapters/matrix/store.js';
import type { FakeHomeserverOptions } from '../../harness/fake-homeserver.js';
import { waitFor } from '../../harness/free-port.js';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { appendApi, botConfig, createEnv, Driver, matrixLink, messagesIn, startAdapter, waitForEvents, type Env } from './helpers.js';

let env: Env | undefined;
const adapters: MatrixAdapter[] = [];

const servers: http.Server[] = [];
const gateways: TestGateway[] = [];

/** An HTTP server with one file, where an attachment URL points. */
async function fileServer(data: Buffer, contentType: string): Promise<string> {
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === '/cat.png' ? 200 : 404, { 'Content-Type': contentType, 'Content-Length': String(data.length) });
    res.end(req.url === '/cat.png' ? data : undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  for (const g of gateways.splice(0)) await g.stop();
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
  for (const a of adapters.splice(0)) await a.stop();
  await env?.close();
  env = undefined;
});

async function botSetup(overrides: Record<string, unknown> = {}, top: Record<string, unknown> = {}, hs: FakeHomeserverOptions = {}): Promise<{ e: Env; adapter: MatrixAdapter; driver: Driver }> {
  const e = await createEnv({ hs });
  env = e;
  e.hs.registerUser('relay', 'relay-pw');
  const adapter = await startAdapter(e, botConfig(e, overrides, top));
  adapters.push(adapter);
  return { e, adapter, driver: new Driver(adapter, e.log, matrixLink(e)) };
}

describe('Matrix against a Synapse-like homeserver', () => {
  it('size rule: a body over the 65,536-byte event limit is delivered cut with the marker, never dead-lettered', async () => {
    const { e, driver } = await botSetup();
    // 33,000 Cyrillic characters: within the log's character limit, 66,000 bytes of UTF-8.
    const body = 'ж'.repeat(33_000);
    const event = await appendApi(e.log, { kind: 'message', content: { body, format: 'html', formatted: `<b>${body}</b>` } });
    const result = await driver.deliver(event);
    expect(result.status).toBe('delivered');
    const sent = messagesIn(e).at(-1);
    expect(String(sent?.content['body']).endsWith(TRUNCATION_MARKER)).toBe(true);
    expect(String(sent?.content['body']).length).toBeGreaterThan(20_000);
  });

  it('mentions: HTTP mentions go out as m.mentions with a pill; a pill-only mention from an older client comes in as a mention', async () => {
    const { e, driver } = await botSetup();
    const event = await appendApi(e.log, { kind: 'message', content: { body: 'ask @bob:fake.test', format: 'markdown', formatted: 'ask **@bob:fake.test**', mentions: ['matrix:@bob:fake.test'] } });
    expect((await driver.deliver(event)).status).toBe('delivered');
    const sent = messagesIn(e).at(-1);
    expect(sent?.content['m.mentions']).toEqual({ user_ids: ['@bob:fake.test'] });
    expect(String(sent?.content['formatted_body'])).toContain('<a href="https://matrix.to/#/@bob:fake.test">@bob:fake.test</a>');

    e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', {
      msgtype: 'm.text',
      body: 'bob: see this',
      format: 'org.matrix.custom.html',
      formatted_body: '<a href="https://matrix.to/#/@bob:fake.test">bob</a>: see this',
    });
    const [inbound] = await waitForEvents(e.log, (es) => es.some((x) => x.kind === 'message' && x.content.body === 'bob: see this'), 'the pill-only mention in the log').then((es) =>
      es.filter((x) => x.kind === 'message' && x.content.body === 'bob: see this'),
    );
    expect(inbound?.kind === 'message' && inbound.content.mentions).toEqual(['matrix:@bob:fake.test']);
  });

  it('attachments: an http(s) file is uploaded to the media repository and sent as m.image with url, info and the text as caption; one over the cap goes as a link; mxc:// is sent as is', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4]);
    const base = await fileServer(png, 'image/png');
    const { e, driver, adapter } = await botSetup({}, { mediaUploadAllowHttp: true });
    const event = await appendApi(e.log, { kind: 'message', content: { body: 'look', attachments: [{ url: `${base}/cat.png`, name: 'cat.png' }] } });
    expect((await driver.deliver(event)).status).toBe('delivered');
    const sent = messagesIn(e).at(-1);
    expect(sent?.content).toMatchObject({ msgtype: 'm.image', body: '<Carol> look', filename: 'cat.png', info: { mimetype: 'image/png', size: png.length } });
    const mxc = String(sent?.content['url']);
    expect(e.hs.media(mxc)?.data).toEqual(png);

    // Already in the media repository: as is, as a file; no text gives the name as body (in bot mode after the sender).
    const inRepo = await appendApi(e.log, { kind: 'message', content: { body: '', attachments: [{ url: mxc, name: 'notes.pdf', mime: 'application/pdf', size: 12 }] } });
    expect((await driver.deliver(inRepo)).status).toBe('delivered');
    expect(messagesIn(e).at(-1)?.content).toMatchObject({ msgtype: 'm.file', url: mxc, filename: 'notes.pdf', body: '<Carol> notes.pdf', info: { mimetype: 'application/pdf', size: 12 } });
    await adapter.stop();

    // Over mediaUploadMaxBytes: a text link, and a warning.
    const small = await startAdapter(e, botConfig(e, {}, { mediaUploadAllowHttp: true, mediaUploadMaxBytes: 4 }));
    adapters.push(small);
    const big = await appendApi(e.log, { kind: 'message', content: { body: 'big', attachments: [{ url: `${base}/cat.png`, name: 'cat.png' }] } });
    expect((await new Driver(small, e.log, matrixLink(e)).deliver(big)).status).toBe('delivered');
    expect(messagesIn(e).at(-1)?.content).toMatchObject({ msgtype: 'm.text', body: `<Carol> big\ncat.png: ${base}/cat.png` });
    expect(e.lines.some((l) => l.msg === 'attachment not uploaded to the media repository; sent as a link')).toBe(true);
  });

  it('reactions: a key already on the homeserver (Synapse < 1.80: 400 M_UNKNOWN) is recovered, and a set update sends what is missing even when one key fails', async () => {
    const { e, driver, adapter } = await botSetup({}, {}, { legacyDuplicateAnnotation: true });
    const mx = e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'react to me' });
    const [target] = await waitForEvents(e.log, (es) => es.some((x) => x.origin.ids['mx.eventId'] === mx), 'the target in the log').then((es) => es.filter((x) => x.origin.ids['mx.eventId'] === mx));
    if (!target) throw new Error('no target');
    const keysOnHs = () =>
      e.hs
        .events(e.roomId)
        .filter((x) => x.type === 'm.reaction' && !x.unsigned?.['redacted_because'])
        .map((x) => String((x.content['m.relates_to'] as { key: string }).key))
        .sort();
    expect((await driver.deliver(await appendApi(e.log, { kind: 'reaction', rel: { reactsTo: target.eventId }, reaction: { keys: ['👍'] } }))).status).toBe('delivered');
    await adapter.stop();

    // The adapter's state is lost: 👍 is already there (a 400 M_UNKNOWN), 🎉 is new.
    const fresh = await startAdapter(e, botConfig(e), { state: memoryMatrixState() });
    adapters.push(fresh);
    const driver2 = new Driver(fresh, e.log, matrixLink(e));
    expect((await driver2.deliver(await appendApi(e.log, { kind: 'reaction', rel: { reactsTo: target.eventId }, reaction: { keys: ['👍', '🎉'] } }))).status).toBe('delivered');
    expect(keysOnHs()).toEqual(['🎉', '👍'].sort());

    // One key refused for now (429): the next key still goes out in the same attempt; the retry sends only the missing one.
    const update = await appendApi(e.log, { kind: 'reaction', rel: { reactsTo: target.eventId }, reaction: { keys: ['👍', '🎉', '❤️', '🚀'] } });
    e.hs.rateLimitNext(1, '/send/m.reaction/', 1_000);
    const first = await fresh.deliver(update, { room: update.room, link: matrixLink(e) }, { attempt: 0, references: await driver2.references(update) });
    expect(first.status).toBe('retry');
    expect(keysOnHs()).toEqual(['🎉', '👍', '🚀'].sort());
    expect((await driver2.deliver(update)).status).toBe('delivered');
    expect(keysOnHs()).toEqual(['🎉', '👍', '❤️', '🚀'].sort());
  });

  it('receipts: a receipt on an event we did not bridge (a topic change) marks up to the latest bridged event before it', async () => {
    const { e } = await botSetup();
    const m1 = e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'first' });
    const topic = e.hs.sendStateAsUser(e.alice.userId, e.roomId, 'm.room.topic', '', { topic: 'new topic' });
    e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'second' });
    const events = await waitForEvents(e.log, (es) => es.some((x) => x.kind === 'message' && x.content.body === 'second'), 'both messages in the log');
    const first = events.find((x) => x.origin.ids['mx.eventId'] === m1);
    e.hs.sendReceiptAsUser(e.bob.userId, e.roomId, topic);
    const withMarker = await waitForEvents(e.log, (es) => es.some((x) => x.kind === 'marker'), 'the marker from the receipt on the topic change');
    const marker = withMarker.find((x) => x.kind === 'marker');
    expect(marker?.rel?.upTo).toBe(first?.eventId);
    expect(marker?.sender.native).toBe(e.bob.userId);
  });

  it('encrypted rooms: a linked one is listed in the adapter status and counted in a metric; linking one through the admin API answers SG_ERR_ROOM_ENCRYPTED', async () => {
    const e = await createEnv();
    env = e;
    e.hs.registerUser('relay', 'relay-pw');
    const secret = e.hs.createRoom(e.alice.userId, { name: 'Secret' });
    e.hs.joinRoom('@relay:fake.test', secret);
    e.hs.sendStateAsUser(e.alice.userId, secret, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
    const other = e.hs.createRoom(e.alice.userId, { name: 'Also secret' });
    e.hs.joinRoom('@relay:fake.test', other);
    e.hs.sendStateAsUser(e.alice.userId, other, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
    const g = await startGateway({
      config: {
        adapters: { matrix: { type: 'matrix', mode: 'bot', homeserverUrl: e.hs.url, serverName: e.hs.serverName, bot: { userId: '@relay:fake.test', password: 'relay-pw', syncTimeoutMs: 2_000 } } },
        rooms: [{ id: 'sec', links: [{ endpoint: 'matrix', target: secret }] }],
      },
    });
    gateways.push(g);
    type Status = { adapters: Record<string, { detail: { encryptedRooms?: string[]; encryptedLinkedRooms?: number } }> };
    await waitFor(async () => ((await g.admin<Status>('GET', '/v1/admin/status')).body.adapters['matrix']?.detail.encryptedRooms ?? []).includes(secret), {
      timeoutMs: 15_000,
      what: 'the encrypted room in the adapter status',
    });
    const metrics = await (await fetch(`${g.url}/metrics`)).text();
    expect(metrics).toMatch(/syncgate_adapter_stat\{adapter="matrix",stat="encryptedLinkedRooms"\} 1\b/);

    const refused = await g.admin<{ code: string; details: { problems: string[] } }>('PUT', '/v1/admin/rooms/also', { links: [{ endpoint: 'matrix', target: other }] });
    expect([refused.status, refused.body.code]).toEqual([400, 'SG_ERR_ROOM_ENCRYPTED']);
    expect(refused.body.details.problems[0]).toContain(other);
    expect((await g.admin('GET', '/v1/admin/rooms/also')).status).toBe(404);
    expect((await g.admin('PUT', '/v1/admin/rooms/plain', { links: [{ endpoint: 'matrix', target: e.roomId }] })).status).toBe(200);
  });
});
