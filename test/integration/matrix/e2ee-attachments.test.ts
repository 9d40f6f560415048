/**
 * Attachments in end-to-end encrypted rooms (issue 22 point 5), in bot mode
 * and in appservice mode, against the fake homeserver's media repository
 * (upload, authenticated download) with a member whose client is the
 * independent Rust-crypto peer: it encrypts and decrypts its files with its
 * own AES-CTR code (test/harness/matrix-e2ee-peer.ts), not the adapter's.
 * Files coming in reach other protocols through the gateway's media route
 * (GET /v1/media/{adapter}/{id}), served by a real HTTP app here.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Attachment, LogEvent } from '../../../src/core/event.js';
import { UNREADABLE_ATTACHMENT_NOTICE } from '../../../src/core/event.js';
import { decryptFile } from '../../harness/matrix-e2ee-peer.js';
import { startApp, type TestApp } from '../http/helpers.js';
import { encryptedRoom, encryptRoom, type E2eeMode, type EncryptedRoom } from './e2ee-room.js';
import { appendApi, Driver, matrixLink, ROOM, waitForEvents } from './helpers.js';

const PNG = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('a picture of a cat, in a few bytes more than one AES block')]);

const rooms: EncryptedRoom[] = [];
const closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  for (const r of rooms.splice(0)) await r.close();
});

async function setup(mode: E2eeMode, opts: Parameters<typeof encryptedRoom>[1] = {}): Promise<EncryptedRoom> {
  const r = await encryptedRoom(mode, opts);
  rooms.push(r);
  return r;
}

/** The gateway's HTTP API with the adapter's media route, listening: where other protocols' clients fetch attachment URLs. */
async function gatewayApi(r: EncryptedRoom): Promise<string> {
  const app: TestApp = await startApp({ log: r.env.log, sharedLog: true, listen: true, deps: { media: async (endpoint, id) => (endpoint === r.adapter.name ? r.adapter.media?.(id) : undefined) } });
  closers.push(() => app.close());
  if (!app.url) throw new Error('not listening');
  return app.url;
}

/** An HTTP server with one file, where an outbound attachment URL points. */
async function fileServer(data: Buffer, type: string): Promise<string> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': String(data.length) });
    res.end(data);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function messageOf(events: LogEvent[], mxEventId: string): Extract<LogEvent, { kind: 'message' }> | undefined {
  const found = events.find((e) => e.kind === 'message' && e.origin.ids['mx.eventId'] === mxEventId);
  return found?.kind === 'message' ? found : undefined;
}

describe.each(['bot', 'appservice'] as const)('Matrix adapter, %s mode: attachments in an encrypted room', (mode) => {
  it('a member\'s encrypted file is downloaded through the authenticated media API, checked, and served decrypted at its gateway URL while the room stays linked', async () => {
    const r = await setup(mode);
    const { env, peer } = r;
    const api = await gatewayApi(r);
    const { file, ciphertext } = await peer.uploadEncrypted(PNG);
    expect(ciphertext.equals(PNG)).toBe(false);
    const sent = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.image', body: 'look at this', filename: 'cat.png', file, info: { mimetype: 'image/png', size: PNG.length } });

    const events = await waitForEvents(env.log, (evs) => messageOf(evs, sent) !== undefined, 'the encrypted image bridged');
    const message = messageOf(events, sent);
    expect(message?.content.body).toBe('look at this');
    expect(message?.content.undecryptable).toBeUndefined();
    const attachment = message?.content.attachments?.[0] as Attachment;
    expect(attachment).toMatchObject({ mime: 'image/png', size: PNG.length, name: 'cat.png' });
    // The gateway's route, not the ciphertext's mxc:// (useless without the key), and no key material in the log.
    expect(attachment.url).toMatch(/^\/v1\/media\/matrix\/[A-Za-z0-9_-]{22}$/);
    expect(JSON.stringify(events)).not.toContain(String((file['key'] as Record<string, unknown>)['k']));
    expect(JSON.stringify(events)).not.toContain(String(file['url']));
    // Checked with the authenticated endpoint, as Synapse serves it.
    expect(env.hs.downloads().filter((d) => d.mxc === file['url']).map((d) => d.path.split('/').slice(0, 6).join('/'))).toContain('/_matrix/client/v1/media/download');

    const res = await fetch(api + attachment.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await res.arrayBuffer()).equals(PNG)).toBe(true);
    // An id that was never given out, and the id of another adapter: nothing.
    expect((await fetch(`${api}/v1/media/matrix/AAAAAAAAAAAAAAAAAAAAAA`)).status).toBe(404);
    expect((await fetch(`${api}${attachment.url.replace('/matrix/', '/xmpp/')}`)).status).toBe(404);

    // Should the media repository later serve another file under that mxc://: an error, never those bytes.
    env.hs.replaceMedia(String(file['url']), Buffer.from(ciphertext.map((b) => b ^ 0x55)));
    const altered = await fetch(api + attachment.url);
    expect(altered.status).toBe(502);
    expect(((await altered.json()) as { code?: string }).code).toBe('SG_ERR_MEDIA_UNAVAILABLE');
    env.hs.replaceMedia(String(file['url']), ciphertext);
    expect((await fetch(api + attachment.url)).status).toBe(200);

    // Once the Matrix room is no longer linked to the gateway room, its files are no longer served.
    await env.log.rooms.put({ id: ROOM, links: [] });
    await env.links.refresh();
    expect((await fetch(api + attachment.url)).status).toBe(404);
  });

  it('an attachment from another protocol goes into the encrypted room as an encrypted file: ciphertext in the media repository, `file` inside the Megolm event, no `url`; the member decrypts it', async () => {
    const r = await setup(mode, { config: { mediaUploadAllowHttp: true } });
    const { env, peer, adapter } = r;
    const base = await fileServer(PNG, 'image/png');
    const out = await appendApi(env.log, { kind: 'message', content: { body: 'from the dashboard', attachments: [{ url: `${base}/cat.png`, name: 'cat.png' }] } });
    const before = new Set(env.hs.mediaUploads().map((u) => u.mxc));
    expect((await new Driver(adapter, env.log, matrixLink(env)).deliver(out)).status).toBe('delivered');

    // What the homeserver got: only m.room.encrypted from the bridge, and an upload that is not the file.
    const ours = env.hs.events(env.roomId).filter((e) => e.sender === r.bridgeUser && e.type !== 'm.room.member');
    expect(ours.map((e) => e.type)).toEqual(['m.room.encrypted']);
    expect(JSON.stringify(ours)).not.toContain('mxc://');
    expect(JSON.stringify(ours)).not.toContain('cat.png');
    const uploads = env.hs.mediaUploads().filter((u) => !before.has(u.mxc));
    expect(uploads).toHaveLength(1);
    const upload = uploads[0];
    expect(upload?.media.data.equals(PNG)).toBe(false);
    expect(upload?.media.data.length).toBe(PNG.length);
    expect(upload?.media.contentType).toBe('application/octet-stream');
    expect(upload?.media.filename).toBeUndefined();

    const got = await peer.waitFor((m) => m.sender === r.bridgeUser);
    expect(got.error).toBeUndefined();
    const content = got.content ?? {};
    expect(content['msgtype']).toBe('m.image');
    expect(content['url']).toBeUndefined();
    expect(content['filename']).toBe('cat.png');
    expect(content['info']).toMatchObject({ mimetype: 'image/png', size: PNG.length });
    const file = content['file'] as Record<string, unknown>;
    expect(file).toMatchObject({ url: upload?.mxc, v: 'v2', key: { kty: 'oct', alg: 'A256CTR', ext: true } });
    // The spec: a 128-bit counter block whose low 64 bits start at zero.
    expect(Buffer.from(String(file['iv']), 'base64').subarray(8).equals(Buffer.alloc(8))).toBe(true);
    expect(decryptFile(upload?.media.data ?? Buffer.alloc(0), file).equals(PNG)).toBe(true);
    expect((await peer.downloadEncrypted(file)).equals(PNG)).toBe(true);

    // A file already in the media repository in clear (an mxc:// from a clear room): fetched, encrypted and uploaded again, never referenced as is.
    const clear = await fetch(`${env.hs.url}/_matrix/media/v3/upload?filename=notes.txt`, { method: 'POST', headers: { Authorization: `Bearer ${env.bob.accessToken}`, 'Content-Type': 'text/plain' }, body: 'clear notes' });
    const clearMxc = String(((await clear.json()) as Record<string, unknown>)['content_uri']);
    const fromRepo = await appendApi(env.log, { kind: 'message', content: { body: '', attachments: [{ url: clearMxc, name: 'notes.txt', mime: 'text/plain' }] } });
    expect((await new Driver(adapter, env.log, matrixLink(env)).deliver(fromRepo)).status).toBe('delivered');
    const second = await peer.waitFor((m) => m.sender === r.bridgeUser && m.eventId !== got.eventId);
    const secondFile = second.content?.['file'] as Record<string, unknown>;
    expect(second.content?.['url']).toBeUndefined();
    expect(secondFile['url']).not.toBe(clearMxc);
    expect((await peer.downloadEncrypted(secondFile)).toString()).toBe('clear notes');
    expect(JSON.stringify(env.hs.events(env.roomId).filter((e) => e.sender === r.bridgeUser))).not.toContain(clearMxc);
  });

  it('a room that turns encryption on while bridged: files went in clear before, encrypted after, with no clear upload after the m.room.encryption event', async () => {
    const r = await setup(mode, { clear: true, config: { mediaUploadAllowHttp: true } });
    const { env, peer, adapter } = r;
    const base = await fileServer(PNG, 'image/png');
    const driver = new Driver(adapter, env.log, matrixLink(env));
    const before = await appendApi(env.log, { kind: 'message', content: { body: 'clear room', attachments: [{ url: `${base}/a.png`, name: 'a.png' }] } });
    expect((await driver.deliver(before)).status).toBe('delivered');
    const clearSent = env.hs.events(env.roomId).filter((e) => e.type === 'm.room.message' && e.content['url'] !== undefined);
    expect(clearSent).toHaveLength(1);
    expect(env.hs.media(String(clearSent[0]?.content['url']))?.data.equals(PNG)).toBe(true);

    encryptRoom(env);
    const uploadsBefore = env.hs.mediaUploads().length;
    const after = await appendApi(env.log, { kind: 'message', content: { body: 'now encrypted', attachments: [{ url: `${base}/b.png`, name: 'b.png' }] } });
    expect((await driver.deliver(after)).status).toBe('delivered');
    const encryptionAt = env.hs.events(env.roomId).findIndex((e) => e.type === 'm.room.encryption');
    const since = env.hs.events(env.roomId).slice(encryptionAt + 1).filter((e) => e.sender === r.bridgeUser && e.type !== 'm.room.member');
    expect(since.map((e) => e.type)).toEqual(['m.room.encrypted']);
    const newUploads = env.hs.mediaUploads().slice(uploadsBefore);
    expect(newUploads).toHaveLength(1);
    expect(newUploads[0]?.media.data.equals(PNG)).toBe(false);
    await peer.sync();
    const got = await peer.waitFor((m) => m.sender === r.bridgeUser && m.content?.['file'] !== undefined);
    expect(got.content?.['url']).toBeUndefined();
    expect((await peer.downloadEncrypted(got.content?.['file'] as Record<string, unknown>)).equals(PNG)).toBe(true);
  });

  it('a file whose download does not match its hash, or cannot be downloaded, is bridged marked unreadable — never dropped, never served', async () => {
    const r = await setup(mode);
    const { env, peer } = r;
    const tampered = await peer.uploadEncrypted(PNG);
    // A media repository that serves another file than the one the event names.
    env.hs.replaceMedia(String(tampered.file['url']), Buffer.from(tampered.ciphertext.map((b, i) => (i === 3 ? b ^ 0xff : b))));
    const bad = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.file', body: 'report.pdf', filename: 'report.pdf', file: tampered.file, info: { mimetype: 'application/pdf' } });
    const missing = await peer.uploadEncrypted(PNG);
    const gone = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.image', body: 'this one is gone', filename: 'x.png', file: { ...missing.file, url: 'mxc://fake.test/NoSuchMedia' } });

    const events = await waitForEvents(env.log, (evs) => messageOf(evs, bad) !== undefined && messageOf(evs, gone) !== undefined, 'both files bridged, marked');
    const mismatch = messageOf(events, bad);
    expect(mismatch?.content).toEqual({ body: `${UNREADABLE_ATTACHMENT_NOTICE} report.pdf`, undecryptable: { reason: 'attachment-hash-mismatch', scheme: 'm.encrypted-file.v2' } });
    const unavailable = messageOf(events, gone);
    expect(unavailable?.content).toEqual({ body: `${UNREADABLE_ATTACHMENT_NOTICE} this one is gone`, undecryptable: { reason: 'attachment-unavailable', scheme: 'm.encrypted-file.v2' } });
    expect(env.lines.some((l) => l.msg === 'encrypted attachment marked unreadable in the log' && l.reason === 'attachment-hash-mismatch')).toBe(true);
    const inbound = r.adapter.status().detail?.['inbound'] as { undecryptable?: Record<string, number> } | undefined;
    expect(inbound?.undecryptable).toMatchObject({ 'attachment-hash-mismatch': 1, 'attachment-unavailable': 1 });
  });
});

describe('Matrix adapter, encrypted attachments against an older homeserver', () => {
  it('without authenticated media (before spec v1.11) the file is downloaded from /_matrix/media/v3/download', async () => {
    const r = await setup('bot', { hs: { authenticatedMedia: false } });
    const { env, peer } = r;
    const api = await gatewayApi(r);
    const { file } = await peer.uploadEncrypted(PNG);
    const sent = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.file', body: 'cat.bin', file });
    const events = await waitForEvents(env.log, (evs) => messageOf(evs, sent) !== undefined, 'the file bridged');
    const url = messageOf(events, sent)?.content.attachments?.[0]?.url ?? '';
    expect(env.hs.downloads().map((d) => d.path.split('/').slice(0, 5).join('/'))).toContain('/_matrix/media/v3/download');
    const res = await fetch(api + url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(PNG)).toBe(true);
  });
});
