/**
 * The Matrix homeserver fake, driven by the real matrix-bot-sdk 0.7 over real
 * HTTP: bot mode (MatrixClient, /sync) and application-service mode
 * (Appservice receiving pushed transactions).
 */
import type { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire, Module } from 'node:module';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type * as SdkModule from 'matrix-bot-sdk';
import type { Appservice, MatrixClient, MatrixError } from 'matrix-bot-sdk';
import { createFakeHomeserver, SYNAPSE_1_67_VERSIONS, type AppServiceRegistration, type FakeHomeserver } from '../harness/fake-homeserver.js';
import { getFreePort, waitFor } from '../harness/free-port.js';

type Sdk = typeof SdkModule;

/**
 * matrix-bot-sdk's index requires e2ee/CryptoClient, which requires
 * @matrix-org/matrix-sdk-crypto-nodejs, whose native binary is downloaded at
 * install time and is absent here, so `import 'matrix-bot-sdk'` throws
 * "Cannot find module '@matrix-org/matrix-sdk-crypto-nodejs-linux-x64-gnu'".
 * vi.mock cannot intercept that nested CommonJS require of an external
 * package, so an empty module is put into the CommonJS cache first. Nothing
 * of it is used unless E2EE is switched on.
 */
async function loadSdk(): Promise<Sdk> {
  const require = createRequire(import.meta.url);
  const sdkRequire = createRequire(require.resolve('matrix-bot-sdk'));
  const bindingPath = sdkRequire.resolve('@matrix-org/matrix-sdk-crypto-nodejs');
  let bindingLoads = true;
  try {
    sdkRequire(bindingPath);
  } catch {
    bindingLoads = false;
  }
  if (!bindingLoads && require.cache[bindingPath] === undefined) {
    const stub = new Module(bindingPath);
    stub.filename = bindingPath;
    stub.loaded = true;
    stub.exports = {};
    require.cache[bindingPath] = stub;
  }
  const sdk = await import('matrix-bot-sdk');
  const quiet = (): void => undefined;
  // The SDK logs every request and every error response to the console.
  sdk.LogService.setLogger({ info: quiet, warn: quiet, error: quiet, debug: quiet, trace: quiet });
  return sdk;
}

let sdk: Sdk;
let hs: FakeHomeserver;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  sdk = await loadSdk();
});

beforeEach(async () => {
  hs = await createFakeHomeserver({ serverName: 'fake.test', appServiceRetry: { initialMs: 50, maxMs: 2000 } });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await hs.stop();
});

/** Resolves with the arguments of the first `name` emission that passes `pred`. */
function nextEmit(emitter: EventEmitter, name: string, pred: (args: unknown[]) => boolean, timeoutMs = 10_000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const onEmit = (...args: unknown[]): void => {
      if (!pred(args)) return;
      cleanup();
      resolve(args);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${name}`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      emitter.off(name, onEmit);
    };
    emitter.on(name, onEmit);
  });
}

function obj(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

function arr(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new Error(`expected an array, got ${JSON.stringify(v)}`);
  return v;
}

/** The event argument of a ('room.message', roomId, event) emission. */
function eventArg(args: unknown[]): Record<string, unknown> {
  return obj(args[1]);
}

async function matrixError(p: Promise<unknown>): Promise<MatrixError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof sdk.MatrixError) return e;
    throw e;
  }
  throw new Error('expected the request to fail');
}

interface RawResponse {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** A request that bypasses the SDK, for headers and exact status codes. */
async function raw(
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; query?: Record<string, string> } = {},
): Promise<RawResponse> {
  const url = new URL(path, hs.url);
  for (const [k, v] of Object.entries(opts.query ?? {})) url.searchParams.set(k, v);
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers['Authorization'] = `Bearer ${opts.token}`;
  const init: RequestInit = { method, headers };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: obj(await res.json()) };
}

function bodies(events: unknown[]): unknown[] {
  return events.map((e) => obj(obj(e)['content'])['body']);
}

function client(token: string): MatrixClient {
  const c = new sdk.MatrixClient(hs.url, token, new sdk.MemoryStorageProvider());
  cleanups.push(() => c.stop());
  return c;
}

function registration(overrides: Partial<AppServiceRegistration> = {}): AppServiceRegistration {
  return {
    id: 'syncgate',
    url: 'http://127.0.0.1:9',
    as_token: 'as-secret',
    hs_token: 'hs-secret',
    sender_localpart: '_sg_bot',
    namespaces: {
      users: [{ regex: '@_sg_.*:fake\\.test', exclusive: true }],
      aliases: [{ regex: '#_sg_.*:fake\\.test', exclusive: true }],
      rooms: [],
    },
    rate_limited: false,
    ...overrides,
  };
}

/** Starts a matrix-bot-sdk Appservice on a free port and points the fake at it. */
async function startAppservice(reg: AppServiceRegistration, hsReg: AppServiceRegistration = reg): Promise<Appservice> {
  hs.registerAppService({ ...hsReg, url: null });
  const appservice = new sdk.Appservice({
    port: 0,
    bindAddress: '127.0.0.1',
    homeserverName: hs.serverName,
    homeserverUrl: hs.url,
    registration: {
      ...reg,
      // The SDK never reads its own URL; the fake learns it below.
      url: 'http://127.0.0.1',
      namespaces: { users: reg.namespaces.users ?? [], aliases: reg.namespaces.aliases ?? [], rooms: reg.namespaces.rooms ?? [] },
    },
    storage: new sdk.MemoryStorageProvider(),
  });
  await appservice.begin();
  cleanups.push(() => appservice.stop());
  // The SDK keeps its listening server private; port 0 avoids a port race.
  const server: unknown = Reflect.get(appservice, 'appServer');
  if (!(server instanceof http.Server)) throw new Error('Appservice has no HTTP server');
  const { port } = server.address() as AddressInfo;
  hs.setAppServiceUrl(hsReg.id, `http://127.0.0.1:${port}`);
  return appservice;
}

describe('fake homeserver: accounts and tokens', () => {
  it('logs in with a password and answers whoami', async () => {
    hs.registerUser('alice', 'secret');
    const alice = await new sdk.MatrixAuth(hs.url).passwordLogin('alice', 'secret', 'test device');
    const whoami = await alice.getWhoAmI();
    expect(whoami.user_id).toBe('@alice:fake.test');
    expect(typeof whoami.device_id).toBe('string');

    const wrong = await matrixError(new sdk.MatrixAuth(hs.url).passwordLogin('alice', 'nope'));
    expect([wrong.statusCode, wrong.errcode]).toEqual([403, 'M_FORBIDDEN']);

    // UIA with the m.login.dummy stage, as the SDK's passwordRegister expects.
    const carol = await new sdk.MatrixAuth(hs.url).passwordRegister('carol', 'pw');
    expect(await carol.getUserId()).toBe('@carol:fake.test');
    // passwordRegister swallows non-401 errors, so check the error on a raw request.
    const taken = await raw('POST', '/_matrix/client/v3/register', { body: { username: 'carol', password: 'pw' } });
    expect([taken.status, taken.body['errcode']]).toEqual([400, 'M_USER_IN_USE']);
  });

  it('rejects missing and unknown tokens with 401', async () => {
    const missing = await matrixError(client('').getWhoAmI());
    expect([missing.statusCode, missing.errcode]).toEqual([401, 'M_MISSING_TOKEN']);
    const unknown = await matrixError(client('not-a-token').getWhoAmI());
    expect([unknown.statusCode, unknown.errcode]).toEqual([401, 'M_UNKNOWN_TOKEN']);
    const versions = await raw('GET', '/_matrix/client/versions');
    expect(arr(versions.body['versions'])).toContain('v1.11');
    const { accessToken } = hs.registerUser('dave', 'pw');
    const r0 = await raw('GET', '/_matrix/client/r0/account/whoami', { token: accessToken });
    expect([r0.status, r0.body['user_id']]).toEqual([200, '@dave:fake.test']);
    const wrongMethod = await raw('POST', '/_matrix/client/v3/account/whoami', { token: accessToken, body: {} });
    expect([wrongMethod.status, wrongMethod.body['errcode']]).toEqual([405, 'M_UNRECOGNIZED']);
  });
});

describe('fake homeserver: rooms and sending', () => {
  it('joins by alias, lists members and state, and refuses non-members', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId, { name: 'Lobby', aliasName: 'lobby' });

    const forbidden = await matrixError(bot.sendText(roomId, 'too early'));
    expect([forbidden.statusCode, forbidden.errcode]).toEqual([403, 'M_FORBIDDEN']);

    expect(await bot.joinRoom('#lobby:fake.test')).toBe(roomId);
    expect(await bot.getJoinedRooms()).toEqual([roomId]);
    expect((await bot.getJoinedRoomMembers(roomId)).sort()).toEqual(['@alice:fake.test', '@bot:fake.test']);
    expect(await bot.getRoomStateEvent(roomId, 'm.room.name', '')).toEqual({ name: 'Lobby' });
    const absent = await matrixError(bot.getRoomStateEvent(roomId, 'm.room.topic', ''));
    expect([absent.statusCode, absent.errcode]).toEqual([404, 'M_NOT_FOUND']);
    const aliceClient = client(alice.accessToken);
    await aliceClient.sendStateEvent(roomId, 'm.room.topic', '', { topic: 'bridged' });
    expect(await bot.getRoomStateEvent(roomId, 'm.room.topic', '')).toEqual({ topic: 'bridged' });
    const lowPower = await matrixError(bot.sendStateEvent(roomId, 'm.room.name', '', { name: 'mine' }));
    expect([lowPower.statusCode, lowPower.errcode]).toEqual([403, 'M_FORBIDDEN']);
    expect((await bot.getRoomState(roomId)).map((e: { type: string }) => e.type)).toContain('m.room.create');

    // A profile change is propagated as a new member event.
    await bot.setDisplayName('Bridge Bot');
    expect(await bot.getUserProfile('@bot:fake.test')).toEqual({ displayname: 'Bridge Bot' });
    expect(await bot.getRoomStateEvent(roomId, 'm.room.member', '@bot:fake.test')).toEqual({ membership: 'join', displayname: 'Bridge Bot' });

    const privateRoom = hs.createRoom(alice.userId, { preset: 'private_chat' });
    const notInvited = await matrixError(bot.joinRoom(privateRoom));
    expect([notInvited.statusCode, notInvited.errcode]).toEqual([403, 'M_FORBIDDEN']);
    hs.inviteUser(alice.userId, privateRoom, '@bot:fake.test');
    expect(await bot.joinRoom(privateRoom)).toBe(privateRoom);

    await bot.leaveRoom(roomId);
    expect(await bot.getJoinedRooms()).toEqual([privateRoom]);
    expect(hs.joinedMembers(roomId)).toEqual(['@alice:fake.test']);
  });

  it('treats a reused txnId on the same device as a retransmission', async () => {
    const alice = hs.registerUser('alice', 'pw');
    hs.registerUser('bot', 'pw');
    const roomId = hs.createRoom(alice.userId);
    const first = await new sdk.MatrixAuth(hs.url).passwordLogin('bot', 'pw');
    const second = await new sdk.MatrixAuth(hs.url).passwordLogin('bot', 'pw');
    cleanups.push(() => first.stop(), () => second.stop());
    await first.joinRoom(roomId);
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/sg-eid-1`;

    const a = obj(await first.doRequest('PUT', path, null, { msgtype: 'm.text', body: 'original' }));
    const b = obj(await first.doRequest('PUT', path, null, { msgtype: 'm.text', body: 'changed on retry' }));
    expect(typeof a['event_id']).toBe('string');
    expect(String(a['event_id']).startsWith('$')).toBe(true);
    expect(b['event_id']).toBe(a['event_id']);
    // Another device (a new login) has its own transaction scope.
    const c = obj(await second.doRequest('PUT', path, null, { msgtype: 'm.text', body: 'other device' }));
    expect(c['event_id']).not.toBe(a['event_id']);

    const messages = hs.events(roomId, { includeTransactionIds: true }).filter((e) => e.type === 'm.room.message');
    expect(bodies(messages)).toEqual(['original', 'other device']);
    expect(messages.map((e) => e.unsigned['transaction_id'])).toEqual(['sg-eid-1', 'sg-eid-1']);

    // unsigned.transaction_id is only for the device that sent the event.
    const findOwn = async (who: MatrixClient): Promise<Record<string, unknown>> => {
      const sync = obj(await who.doRequest('GET', '/_matrix/client/v3/sync'));
      const timeline = arr(obj(obj(obj(obj(obj(sync['rooms'])['join'])[roomId])['timeline']))['events']);
      const ev = timeline.map(obj).find((e) => e['event_id'] === a['event_id']);
      if (!ev) throw new Error('event not in /sync');
      return obj(ev['unsigned']);
    };
    expect((await findOwn(first))['transaction_id']).toBe('sg-eid-1');
    expect((await findOwn(second))['transaction_id']).toBeUndefined();
  });

  it('answers 429 with retry_after_ms in the body and, like Synapse, no Retry-After header (unless asked), then serves the retry', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId);
    await bot.joinRoom(roomId);

    hs.rateLimitNext(1, '/send/', 2500);
    const limited = await matrixError(bot.sendText(roomId, 'hello'));
    expect([limited.statusCode, limited.errcode, limited.retryAfterMs]).toEqual([429, 'M_LIMIT_EXCEEDED', 2500]);
    await bot.sendText(roomId, 'hello');
    expect(bodies(hs.events(roomId).filter((e) => e.type === 'm.room.message'))).toEqual(['hello']);

    // The SDK drops response headers, so check the header on a raw request.
    const token = hs.registerUser('carol', 'pw').accessToken;
    hs.rateLimitNext(1, /\/account\/whoami$/, 2500);
    const res = await raw('GET', '/_matrix/client/v3/account/whoami', { token });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBeNull();
    expect(res.body).toMatchObject({ errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 2500 });
    expect((await raw('GET', '/_matrix/client/v3/account/whoami', { token })).status).toBe(200);

    const withHeader = await createFakeHomeserver({ retryAfterHeader: true });
    cleanups.push(() => withHeader.stop());
    const t2 = withHeader.registerUser('carol', 'pw').accessToken;
    withHeader.rateLimitNext(1, /\/account\/whoami$/, 2500);
    const limitedWithHeader = await fetch(`${withHeader.url}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${t2}` } });
    expect([limitedWithHeader.status, limitedWithHeader.headers.get('retry-after')]).toEqual([429, '3']);
  });

  it('redacts per the spec, stores relations as sent and blocks duplicate annotations', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId);
    await bot.joinRoom(roomId);
    const original = await bot.sendMessage(roomId, { msgtype: 'm.text', body: 'helo', format: 'org.matrix.custom.html', formatted_body: '<b>helo</b>' });
    const editContent = {
      msgtype: 'm.text',
      body: '* hello',
      'm.new_content': { msgtype: 'm.text', body: 'hello' },
      'm.relates_to': { rel_type: 'm.replace', event_id: original },
    };
    const edit = await bot.sendEvent(roomId, 'm.room.message', editContent);
    const reaction = { 'm.relates_to': { rel_type: 'm.annotation', event_id: original, key: '👍' } };
    const reactionId = await bot.sendEvent(roomId, 'm.reaction', reaction);
    const dup = await matrixError(bot.sendEvent(roomId, 'm.reaction', reaction));
    expect([dup.statusCode, dup.errcode]).toEqual([400, 'M_DUPLICATE_ANNOTATION']);
    const annotations = await bot.getRelationsForEvent(roomId, original, 'm.annotation');
    expect(annotations.chunk.map((e: { event_id: string }) => e.event_id)).toEqual([reactionId]);

    expect(hs.events(roomId).find((e) => e.event_id === edit)?.content).toEqual(editContent);
    const served = obj(await bot.getEvent(roomId, original));
    expect(obj(obj(obj(served['unsigned'])['m.relations'])['m.replace'])['event_id']).toBe(edit);
    expect(obj(served['content'])['body']).toBe('helo');

    // Once the first annotation is redacted the same key may be sent again.
    await bot.redactEvent(roomId, reactionId);
    await bot.sendEvent(roomId, 'm.reaction', reaction);

    const denied = await matrixError(bot.redactEvent(roomId, hs.events(roomId)[0]?.event_id ?? ''));
    expect([denied.statusCode, denied.errcode]).toEqual([403, 'M_FORBIDDEN']);

    const redactionId = await bot.redactEvent(roomId, original, 'typo');
    const redacted = hs.events(roomId).find((e) => e.event_id === original);
    expect(redacted?.content).toEqual({});
    expect(obj(redacted?.unsigned['redacted_because'])['event_id']).toBe(redactionId);
    const redaction = hs.events(roomId).find((e) => e.event_id === redactionId);
    expect(redaction?.content).toEqual({ redacts: original, reason: 'typo' });
    expect(redaction?.redacts).toBe(original);

    // Membership events keep `membership` (and still count) when redacted.
    const botJoin = hs.events(roomId).find((e) => e.type === 'm.room.member' && e.state_key === '@bot:fake.test');
    hs.redactAsUser(alice.userId, roomId, botJoin?.event_id ?? '');
    expect(hs.events(roomId).find((e) => e.event_id === botJoin?.event_id)?.content).toEqual({ membership: 'join' });
    expect(hs.joinedMembers(roomId)).toContain('@bot:fake.test');
  });
});

describe('fake homeserver: /sync', () => {
  it('delivers another user’s message to a syncing bot', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId);
    await bot.joinRoom(roomId);
    await bot.start();
    const received = nextEmit(bot, 'room.message', (args) => eventArg(args)['sender'] === alice.userId);
    const eventId = hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'hi bot' });
    const args = await received;
    expect(args[0]).toBe(roomId);
    const ev = eventArg(args);
    expect(ev).toMatchObject({ event_id: eventId, type: 'm.room.message', content: { msgtype: 'm.text', body: 'hi bot' } });
    expect(typeof ev['origin_server_ts']).toBe('number');
    expect(typeof obj(ev['unsigned'])['age']).toBe('number');
    expect(obj(ev['unsigned'])['transaction_id']).toBeUndefined();
  });

  it('delivers an invite that the autojoin mixin accepts', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId, { preset: 'private_chat', name: 'Secret' });
    sdk.AutojoinRoomsMixin.setupOnClient(bot);
    await bot.start();
    const invited = nextEmit(bot, 'room.invite', (args) => args[0] === roomId);
    const joined = nextEmit(bot, 'room.join', (args) => args[0] === roomId);
    hs.inviteUser(alice.userId, roomId, '@bot:fake.test');
    expect(obj(eventArg(await invited)['content'])['membership']).toBe('invite');
    await joined;
    expect(hs.joinedMembers(roomId).sort()).toEqual(['@alice:fake.test', '@bot:fake.test']);
  });

  it('returns a limited timeline whose gap /messages fills, and long-polls', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId);
    await bot.joinRoom(roomId);
    const filter = JSON.stringify({ room: { timeline: { limit: 3 } } });
    const sync = async (since?: string, timeout = 0): Promise<Record<string, unknown>> => {
      const qs: Record<string, string | number> = { filter, timeout };
      if (since !== undefined) qs['since'] = since;
      return obj(await bot.doRequest('GET', '/_matrix/client/v3/sync', qs));
    };
    const roomOf = (s: Record<string, unknown>): Record<string, unknown> => obj(obj(obj(s['rooms'])['join'])[roomId]);

    const initial = await sync();
    const since = String(initial['next_batch']);
    for (const n of [1, 2, 3, 4, 5]) hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: `m${n}` });
    const timeline = obj(roomOf(await sync(since))['timeline']);
    expect(timeline['limited']).toBe(true);
    expect(bodies(arr(timeline['events']))).toEqual(['m3', 'm4', 'm5']);

    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages`;
    const gap = obj(await bot.doRequest('GET', path, { from: since, to: String(timeline['prev_batch']), dir: 'f' }));
    expect(bodies(arr(gap['chunk']))).toEqual(['m1', 'm2']);
    const back = obj(await bot.doRequest('GET', path, { from: String(timeline['prev_batch']), dir: 'b', limit: 2 }));
    expect(bodies(arr(back['chunk']))).toEqual(['m2', 'm1']);
    expect(typeof back['end']).toBe('string');
    const missingDir = await matrixError(bot.doRequest('GET', path, { from: since }));
    expect([missingDir.statusCode, missingDir.errcode]).toEqual([400, 'M_MISSING_PARAM']);

    // An incremental sync with nothing new waits for the next event.
    const caughtUp = String((await sync(since))['next_batch']);
    const pending = sync(caughtUp, 20_000);
    await waitFor(() => hs.requests().filter((r) => r.path.endsWith('/sync')).length >= 4, { timeoutMs: 5_000, what: 'the long-poll request' });
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'wake up' });
    const woken = obj(roomOf(await pending)['timeline']);
    expect(bodies(arr(woken['events']))).toEqual(['wake up']);
    expect(woken['limited']).toBe(false);
  });

  it('syncs receipts and typing as ephemeral events, private receipts only to their owner', async () => {
    const alice = hs.registerUser('alice', 'pw');
    const bot = client(hs.registerUser('bot', 'pw').accessToken);
    const roomId = hs.createRoom(alice.userId);
    await bot.joinRoom(roomId);
    const aliceSince = String((await raw('GET', '/_matrix/client/v3/sync', { token: alice.accessToken })).body['next_batch']);
    const msg = hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'read me' });
    await bot.sendReadReceipt(roomId, msg);
    await bot.setTyping(roomId, true, 10_000);
    hs.sendReceiptAsUser(alice.userId, roomId, msg, 'm.read.private');

    const aliceSync = await raw('GET', '/_matrix/client/v3/sync', { token: alice.accessToken, query: { since: aliceSince } });
    const ephemeral = arr(obj(obj(obj(obj(aliceSync.body['rooms'])['join'])[roomId])['ephemeral'])['events']).map(obj);
    const typing = ephemeral.find((e) => e['type'] === 'm.typing');
    expect(obj(typing?.['content'])['user_ids']).toEqual(['@bot:fake.test']);
    const receipts = obj(obj(ephemeral.find((e) => e['type'] === 'm.receipt')?.['content'])[msg]);
    expect(typeof obj(obj(receipts['m.read'])['@bot:fake.test'])['ts']).toBe('number');
    expect(Object.keys(obj(receipts['m.read.private']))).toEqual(['@alice:fake.test']);

    const botSync = obj(await bot.doRequest('GET', '/_matrix/client/v3/sync'));
    const botEphemeral = arr(obj(obj(obj(obj(botSync['rooms'])['join'])[roomId])['ephemeral'])['events']).map(obj);
    const botReceipts = obj(obj(botEphemeral.find((e) => e['type'] === 'm.receipt')?.['content'])[msg]);
    expect(botReceipts['m.read.private']).toBeUndefined();
  });
});

describe('fake homeserver: application services', () => {
  it('registers namespaced users and enforces namespaces and masquerading', async () => {
    const reg = registration();
    const appservice = await startAppservice(reg);
    const ghost = appservice.getIntentForSuffix('alice');
    await ghost.ensureRegistered();
    const whoami = await ghost.underlyingClient.getWhoAmI();
    expect(whoami.user_id).toBe('@_sg_alice:fake.test');
    expect(typeof whoami.device_id).toBe('string');

    const register = (username: string, token?: string): Promise<RawResponse> =>
      raw('POST', '/_matrix/client/v3/register', { body: { type: 'm.login.application_service', username }, ...(token === undefined ? {} : { token }) });
    expect((await register('_sg_alice', reg.as_token)).body['errcode']).toBe('M_USER_IN_USE');
    const outside = await register('mallory', reg.as_token);
    expect([outside.status, outside.body['errcode']]).toEqual([400, 'M_EXCLUSIVE']);
    expect((await register('_sg_Bad Name', reg.as_token)).body['errcode']).toBe('M_INVALID_USERNAME');
    const noToken = await register('_sg_bob');
    expect([noToken.status, noToken.body['errcode']]).toEqual([401, 'M_MISSING_TOKEN']);
    // Ordinary users cannot take names in an exclusive namespace.
    const squat = await raw('POST', '/_matrix/client/v3/register', { body: { username: '_sg_bob', password: 'pw' } });
    expect([squat.status, squat.body['errcode']]).toEqual([400, 'M_EXCLUSIVE']);

    hs.registerUser('mallory', 'pw');
    const asClient = client(reg.as_token);
    asClient.impersonateUserId('@mallory:fake.test');
    const masquerade = await matrixError(asClient.getWhoAmI());
    expect([masquerade.statusCode, masquerade.errcode]).toEqual([403, 'M_FORBIDDEN']);
    const unregistered = client(reg.as_token);
    unregistered.impersonateUserId('@_sg_nobody:fake.test');
    expect((await matrixError(unregistered.getWhoAmI())).statusCode).toBe(403);
    expect(await appservice.botClient.getUserId()).toBe('@_sg_bot:fake.test');
  });

  it('pushes room events and ephemeral data to a matrix-bot-sdk Appservice', async () => {
    const reg = registration({ 'de.sorunome.msc2409.push_ephemeral': true });
    const appservice = await startAppservice(reg);
    const alice = hs.registerUser('alice', 'pw');
    const roomId = hs.createRoom(alice.userId);
    const ghost = appservice.getIntentForSuffix('alice');
    await ghost.ensureRegisteredAndJoined(roomId);

    const message = nextEmit(appservice, 'room.message', (args) => eventArg(args)['sender'] === alice.userId);
    const eventId = hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'to the bridge' });
    const ev = eventArg(await message);
    expect(ev).toMatchObject({ event_id: eventId, room_id: roomId, content: { body: 'to the bridge' } });

    // The AS also sees its own ghost's event, with the transaction id it chose.
    const echo = nextEmit(appservice, 'room.message', (args) => eventArg(args)['sender'] === '@_sg_alice:fake.test');
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/sg-eid-42`;
    await ghost.underlyingClient.doRequest('PUT', path, null, { msgtype: 'm.text', body: 'from the bridge' });
    expect(obj(eventArg(await echo)['unsigned'])['transaction_id']).toBe('sg-eid-42');

    // matrix-bot-sdk 0.7 reads only the MSC2409 key for ephemeral data.
    const typing = nextEmit(appservice, 'ephemeral.event', (args) => obj(args[0])['type'] === 'm.typing');
    hs.setTyping(alice.userId, roomId, true, 10_000);
    expect(obj((await typing)[0])).toMatchObject({ room_id: roomId, content: { user_ids: [alice.userId] } });

    // The SDK emits before it answers 200, so wait for the fake to record the delivery.
    await waitFor(() => hs.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 10_000, what: 'all transactions delivered' });
    const sent = hs.appServiceTransactions(reg.id);
    expect(sent.every((t) => t.attempts.length === 1 && t.attempts[0]?.kind === 'status')).toBe(true);
    const firstTxnId = Number(sent[0]?.txnId);
    expect(sent.map((t) => Number(t.txnId) - firstTxnId)).toEqual(sent.map((_, i) => i));
  });

  it('keeps retrying when the Appservice rejects a wrong hs_token', async () => {
    const reg = registration();
    const appservice = await startAppservice(reg, { ...reg, hs_token: 'not-the-hs-token' });
    const alice = hs.registerUser('alice', 'pw');
    const roomId = hs.createRoom(alice.userId);
    await appservice.getIntentForSuffix('alice').ensureRegisteredAndJoined(roomId);
    let emitted = 0;
    appservice.on('room.event', () => emitted++);

    await waitFor(() => (hs.appServiceTransactions(reg.id)[0]?.attempts.length ?? 0) >= 3, { timeoutMs: 10_000, what: 'three push attempts' });
    const first = hs.appServiceTransactions(reg.id)[0];
    expect(first?.delivered).toBe(false);
    // matrix-bot-sdk answers 401 AUTH_FAILED; the AS API says 403 M_FORBIDDEN.
    expect(new Set(first?.attempts.map((a) => JSON.stringify(a)))).toEqual(new Set([JSON.stringify({ kind: 'status', status: 401 })]));
    expect(emitted).toBe(0);

    const server = Reflect.get(appservice, 'appServer') as http.Server;
    const { port } = server.address() as AddressInfo;
    const direct = await fetch(`http://127.0.0.1:${port}/_matrix/app/v1/transactions/x`, {
      method: 'PUT',
      headers: { Authorization: 'Bearer wrong', 'Content-Type': 'application/json' },
      body: JSON.stringify({ events: [] }),
    });
    expect([direct.status, obj(await direct.json())['errcode']]).toEqual([401, 'AUTH_FAILED']);
  });

  it('retries one frozen transaction until 200 and sends the next only afterwards', async () => {
    const seen: { txnId: string; body: string; auth: string | undefined; query: string }[] = [];
    let failuresLeft = 2;
    const asServer = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const url = new URL(req.url ?? '/', 'http://as');
        seen.push({ txnId: url.pathname.split('/').pop() ?? '', body: Buffer.concat(chunks).toString('utf8'), auth: req.headers['authorization'], query: url.search });
        const fail = failuresLeft > 0;
        if (fail) failuresLeft--;
        res.writeHead(fail ? 500 : 200, { 'Content-Type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve) => asServer.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => asServer.close(() => resolve())));
    const asUrl = `http://127.0.0.1:${(asServer.address() as AddressInfo).port}`;

    const alice = hs.registerUser('alice', 'pw');
    const reg = registration({
      url: null,
      receive_ephemeral: true,
      namespaces: { users: [{ regex: '@_sg_.*', exclusive: true }], rooms: [{ regex: '!.*', exclusive: false }] },
    });
    hs.registerAppService(reg);
    const roomId = hs.createRoom(alice.userId);
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'm1' });
    // First a closed port (connection refused), then the real AS.
    hs.setAppServiceUrl(reg.id, `http://127.0.0.1:${await getFreePort()}`);
    await waitFor(() => (hs.appServiceTransactions(reg.id)[0]?.attempts.length ?? 0) >= 2, { timeoutMs: 10_000, what: 'refused attempts' });
    hs.setAppServiceUrl(reg.id, asUrl);
    await waitFor(() => seen.length >= 1, { timeoutMs: 10_000, what: 'a push to the AS' });
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'm2' });
    await waitFor(() => hs.appServiceTransactions(reg.id).filter((t) => t.delivered).length === 2, { timeoutMs: 10_000, what: 'two delivered transactions' });

    const [t1, t2] = hs.appServiceTransactions(reg.id);
    expect(t1?.attempts.slice(0, 2).map((a) => a.kind)).toEqual(['network-error', 'network-error']);
    expect(seen.map((s) => s.txnId)).toEqual([t1?.txnId, t1?.txnId, t1?.txnId, t2?.txnId]);
    expect(new Set(seen.slice(0, 3).map((s) => s.body)).size).toBe(1);
    expect(seen.every((s) => s.auth === 'Bearer hs-secret' && s.query === '')).toBe(true);
    const firstEvents = arr(obj(JSON.parse(seen[0]?.body ?? '{}'))['events']).map(obj);
    expect(firstEvents[0]?.['type']).toBe('m.room.create');
    expect(bodies(firstEvents.filter((e) => e['type'] === 'm.room.message'))).toEqual(['m1']);
    expect(bodies(arr(obj(JSON.parse(seen[3]?.body ?? '{}'))['events']))).toEqual(['m2']);

    // Like Synapse: `receive_ephemeral` alone gets no ephemeral push (Synapse reads only the MSC2409 flag).
    hs.setTyping(alice.userId, roomId, true, 10_000);
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'm3' });
    await waitFor(() => seen.length >= 5, { timeoutMs: 10_000, what: 'the next transaction' });
    const next = obj(JSON.parse(seen[4]?.body ?? '{}'));
    expect(bodies(arr(next['events']))).toEqual(['m3']);
    expect([next['ephemeral'], next['de.sorunome.msc2409.ephemeral']]).toEqual([undefined, undefined]);
  });

  it('redelivers a transaction whose 200 was lost, and the SDK processes it once', async () => {
    const reg = registration();
    const appservice = await startAppservice(reg);
    const alice = hs.registerUser('alice', 'pw');
    const roomId = hs.createRoom(alice.userId);
    await appservice.getIntentForSuffix('alice').ensureRegisteredAndJoined(roomId);
    await waitFor(() => hs.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 10_000, what: 'setup transactions' });
    const seen: string[] = [];
    appservice.on('room.message', (_roomId: string, ev: unknown) => seen.push(String(obj(ev)['event_id'])));

    hs.failAppServiceNext(1, { afterDelivery: true });
    const eventId = hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'once' });
    await waitFor(() => hs.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 10_000, what: 'redelivery' });
    const last = hs.appServiceTransactions(reg.id).at(-1);
    expect(last?.attempts).toEqual([{ kind: 'ack-lost', status: 200 }, { kind: 'status', status: 200 }]);
    expect(seen).toEqual([eventId]);

    // A failure before sending is retried the same way and reaches the AS once.
    hs.failAppServiceNext(1);
    const second = hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'twice failed' });
    await waitFor(() => hs.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 10_000, what: 'second redelivery' });
    expect(hs.appServiceTransactions(reg.id).at(-1)?.attempts.map((a) => a.kind)).toEqual(['injected-failure', 'status']);
    expect(seen).toEqual([eventId, second]);
  });
});

describe('fake homeserver: media repository (as Synapse serves it)', () => {
  it('uploads with a token, serves the file by authenticated download only, and refuses uploads over the limit', async () => {
    const { accessToken } = hs.registerUser('mediauser', 'pw');
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2, 255]);
    const noToken = await fetch(`${hs.url}/_matrix/media/v3/upload?filename=cat.png`, { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: png });
    expect([noToken.status, ((await noToken.json()) as { errcode: string }).errcode]).toEqual([401, 'M_MISSING_TOKEN']);
    const up = await fetch(`${hs.url}/_matrix/media/v3/upload?filename=cat.png`, { method: 'POST', headers: { 'Content-Type': 'image/png', Authorization: `Bearer ${accessToken}` }, body: png });
    const { content_uri: mxc } = (await up.json()) as { content_uri: string };
    expect(mxc).toMatch(/^mxc:\/\/fake\.test\/[A-Za-z0-9]+$/);
    expect(hs.media(mxc)).toMatchObject({ contentType: 'image/png', filename: 'cat.png', uploader: '@mediauser:fake.test' });

    const [server, id] = mxc.slice('mxc://'.length).split('/');
    const down = await fetch(`${hs.url}/_matrix/client/v1/media/download/${server}/${id}`, { headers: { Authorization: `Bearer ${accessToken}` } });
    expect(down.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await down.arrayBuffer())).toEqual(png);
    expect((await fetch(`${hs.url}/_matrix/client/v1/media/download/${server}/${id}`)).status).toBe(401);
    // Unauthenticated media is frozen (spec v1.12; Synapse's enable_authenticated_media).
    expect((await fetch(`${hs.url}/_matrix/media/v3/download/${server}/${id}`)).status).toBe(404);

    const small = await createFakeHomeserver({ maxUploadBytes: 4 });
    cleanups.push(() => small.stop());
    const { accessToken: t2 } = small.registerUser('m2', 'pw');
    const big = await fetch(`${small.url}/_matrix/media/v3/upload`, { method: 'POST', headers: { 'Content-Type': 'image/png', Authorization: `Bearer ${t2}` }, body: png });
    expect([big.status, ((await big.json()) as { errcode: string }).errcode]).toEqual([413, 'M_TOO_LARGE']);
  });
});

describe('fake homeserver: Synapse versions', () => {
  it('answers a duplicate annotation with 400 M_UNKNOWN as Synapse before 1.80 did, when asked to', async () => {
    const old = await createFakeHomeserver({ legacyDuplicateAnnotation: true });
    cleanups.push(() => old.stop());
    const alice = old.registerUser('alice', 'pw');
    const roomId = old.createRoom(alice.userId);
    const target = old.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'hi' });
    const reaction = { 'm.relates_to': { rel_type: 'm.annotation', event_id: target, key: '👍' } };
    const send = (txn: string) =>
      fetch(`${old.url}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.reaction/${txn}`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${alice.accessToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(reaction),
      });
    expect((await send('t1')).status).toBe(200);
    const dup = await send('t2');
    expect([dup.status, ((await dup.json()) as { errcode: string }).errcode]).toEqual([400, 'M_UNKNOWN']);
  });
});

describe('fake homeserver: application-service ping (spec v1.7, as Synapse serves it)', () => {
  it('pings the AS with its hs_token for the AS itself only, and reports a failing AS as 502', async () => {
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization}`);
      res.writeHead(req.url === '/_matrix/app/v1/ping' ? 200 : 404, { 'Content-Type': 'application/json' });
      res.end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const reg = registration({ url: null });
    hs.registerAppService(reg);
    expect((await raw('POST', '/_matrix/client/v1/appservice/syncgate/ping', { token: 'as-secret', body: {} })).body['errcode']).toBe('M_URL_NOT_SET');
    hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const ok = await raw('POST', '/_matrix/client/v1/appservice/syncgate/ping', { token: 'as-secret', body: { transaction_id: 't1' } });
    expect(ok.status).toBe(200);
    expect(typeof ok.body['duration_ms']).toBe('number');
    expect(seen).toEqual(['POST /_matrix/app/v1/ping Bearer hs-secret']);
    expect(hs.appServicePings('syncgate')).toBe(1);
    expect((await raw('POST', '/_matrix/client/v1/appservice/other/ping', { token: 'as-secret', body: {} })).status).toBe(403);
    const user = hs.registerUser('pinger', 'pw');
    expect((await raw('POST', '/_matrix/client/v1/appservice/syncgate/ping', { token: user.accessToken, body: {} })).status).toBe(403);
    hs.setAppServiceUrl('syncgate', 'http://127.0.0.1:9');
    expect((await raw('POST', '/_matrix/client/v1/appservice/syncgate/ping', { token: 'as-secret', body: {} })).status).toBe(502);
  });
});

describe('fake homeserver: /versions of an older Synapse', () => {
  it('lists only up to v1.2 when configured as Synapse 1.67, while serving v3 paths', async () => {
    const old = await createFakeHomeserver({ specVersions: SYNAPSE_1_67_VERSIONS });
    cleanups.push(() => old.stop());
    const versions = (await (await fetch(`${old.url}/_matrix/client/versions`)).json()) as { versions: string[] };
    expect(versions.versions.at(-1)).toBe('v1.2');
    expect(versions.versions).not.toContain('v1.7');
    const { accessToken } = old.registerUser('v3user', 'pw');
    const whoami = await fetch(`${old.url}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${accessToken}` } });
    expect(whoami.status).toBe(200);
  });
});

describe('fake homeserver: content validation as Synapse does it', () => {
  it('refuses with 400 a message with a non-string body or no msgtype, a reaction without key, and a relation to an unknown event', async () => {
    const alice = hs.registerUser('validator', 'pw');
    const roomId = hs.createRoom(alice.userId);
    const target = hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'target' });
    let n = 0;
    const send = (type: string, content: unknown) => raw('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${type}/v${n++}`, { token: alice.accessToken, body: content });
    const cases: Array<[string, string, unknown]> = [
      ['non-string body', 'm.room.message', { msgtype: 'm.text', body: { nested: true } }],
      ['missing msgtype', 'm.room.message', { body: 'hi' }],
      ['reaction without key', 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: target } }],
      ['relation to an unknown event', 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: '$nope', key: '👍' } }],
      ['edit of an unknown event', 'm.room.message', { msgtype: 'm.text', body: '* x', 'm.new_content': { msgtype: 'm.text', body: 'x' }, 'm.relates_to': { rel_type: 'm.replace', event_id: '$nope' } }],
    ];
    for (const [what, type, content] of cases) expect({ what, status: (await send(type, content)).status }).toEqual({ what, status: 400 });
    expect((await send('m.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: target, key: '👍' } })).status).toBe(200);
    expect((await send('m.room.message', { msgtype: 'm.text', body: 'fine' })).status).toBe(200);
  });
});

describe('fake homeserver: AS push of an older Synapse', () => {
  it('pushes to the unprefixed /transactions/{txnId} with ?access_token and no Authorization header, when configured as Synapse < 1.81', async () => {
    const old = await createFakeHomeserver({ legacyAppServicePush: true });
    cleanups.push(() => old.stop());
    const seen: Array<{ url: string | undefined; auth: string | undefined }> = [];
    const server = http.createServer((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const reg = registration();
    old.registerAppService({ ...reg, namespaces: { ...reg.namespaces, rooms: [{ regex: '.*', exclusive: false }] }, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
    const alice = old.registerUser('alice', 'pw');
    const roomId = old.createRoom(alice.userId);
    old.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'hi' });
    await waitFor(() => seen.length > 0, { timeoutMs: 10_000, what: 'a pushed transaction' });
    expect(seen[0]?.url).toMatch(/^\/transactions\/\d+\?access_token=hs-secret$/);
    expect(seen[0]?.auth).toBeUndefined();
  });
});

describe('fake homeserver: ephemeral push as Synapse does it', () => {
  it('pushes receipts only under de.sorunome.msc2409.ephemeral, even to a registration asking for both; the stable key only when configured', async () => {
    for (const stable of [false, true]) {
      const server = await createFakeHomeserver(stable ? { stableEphemeral: true } : {});
      cleanups.push(() => server.stop());
      const seen: Array<Record<string, unknown>> = [];
      const asServer = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          seen.push(obj(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}')));
          res.writeHead(200, { 'Content-Type': 'application/json' });
          res.end('{}');
        });
      });
      await new Promise<void>((resolve) => asServer.listen(0, '127.0.0.1', resolve));
      cleanups.push(() => new Promise<void>((resolve) => asServer.close(() => resolve())));
      const reg = registration({ receive_ephemeral: true, 'de.sorunome.msc2409.push_ephemeral': true, namespaces: { users: [{ regex: '@_sg_.*', exclusive: true }], rooms: [{ regex: '!.*', exclusive: false }] } });
      server.registerAppService({ ...reg, url: `http://127.0.0.1:${(asServer.address() as AddressInfo).port}` });
      const alice = server.registerUser('alice', 'pw');
      const roomId = server.createRoom(alice.userId);
      const m = server.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'read me' });
      server.sendReceiptAsUser(alice.userId, roomId, m);
      await waitFor(() => seen.some((b) => b['de.sorunome.msc2409.ephemeral'] !== undefined), { timeoutMs: 10_000, what: 'the receipt pushed' });
      const withReceipt = seen.find((b) => b['de.sorunome.msc2409.ephemeral'] !== undefined);
      expect(JSON.stringify(withReceipt?.['de.sorunome.msc2409.ephemeral'])).toContain('m.receipt');
      expect({ stable, key: withReceipt?.['ephemeral'] !== undefined }).toEqual({ stable, key: stable });
    }
  });
});

describe('fake homeserver: an AS that is down', () => {
  it('drops receipts that happen while the AS is down, as Synapse does, and delivers the room events once it is back', async () => {
    const server = await createFakeHomeserver();
    cleanups.push(() => server.stop());
    const seen: Array<Record<string, unknown>> = [];
    const asServer = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push(obj(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}')));
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve) => asServer.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => asServer.close(() => resolve())));
    const reg = registration({ 'de.sorunome.msc2409.push_ephemeral': true, namespaces: { users: [{ regex: '@_sg_.*', exclusive: true }], rooms: [{ regex: '!.*', exclusive: false }] } });
    server.registerAppService({ ...reg, url: `http://127.0.0.1:${await getFreePort()}` });
    const alice = server.registerUser('alice', 'pw');
    const roomId = server.createRoom(alice.userId);
    const m = server.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'while down' });
    await waitFor(() => (server.appServiceTransactions(reg.id)[0]?.attempts.length ?? 0) >= 1, { timeoutMs: 10_000, what: 'a failed attempt' });
    server.sendReceiptAsUser(alice.userId, roomId, m);
    expect(server.droppedEphemeral(reg.id)).toBe(1);
    server.setAppServiceUrl(reg.id, `http://127.0.0.1:${(asServer.address() as AddressInfo).port}`);
    await waitFor(() => server.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 10_000, what: 'the transaction delivered' });
    expect(seen.some((b) => JSON.stringify(b['events']).includes('while down'))).toBe(true);
    expect(seen.some((b) => b['de.sorunome.msc2409.ephemeral'] !== undefined)).toBe(false);
  });
});

describe('fake homeserver: room version 9', () => {
  it('serves a redaction with redacts at the top level only, in rooms created as version 9', async () => {
    const server = await createFakeHomeserver({ roomVersion: '9' });
    cleanups.push(() => server.stop());
    const alice = server.registerUser('alice', 'pw');
    const roomId = server.createRoom(alice.userId);
    const m = server.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'oops' });
    const r = server.redactAsUser(alice.userId, roomId, m);
    const events = server.events(roomId);
    expect(events.find((e) => e.type === 'm.room.create')?.content['room_version']).toBe('9');
    const redaction = events.find((e) => e.event_id === r);
    expect(redaction?.redacts).toBe(m);
    expect(redaction?.content['redacts']).toBeUndefined();
  });
});

describe('fake homeserver: AS retry backoff as Synapse', () => {
  it('waits 2 s, then 4 s … before retrying a failed transaction, never earlier even when new events come', async () => {
    const server = await createFakeHomeserver();
    cleanups.push(() => server.stop());
    const reg = registration({ namespaces: { users: [{ regex: '@_sg_.*', exclusive: true }], rooms: [{ regex: '!.*', exclusive: false }] } });
    server.registerAppService({ ...reg, url: `http://127.0.0.1:${await getFreePort()}` });
    const alice = server.registerUser('alice', 'pw');
    const roomId = server.createRoom(alice.userId);
    await waitFor(() => (server.appServiceTransactions(reg.id)[0]?.attempts.length ?? 0) >= 1, { timeoutMs: 10_000, what: 'the first failed attempt' });
    // New events while the AS is down do not bring the retry forward.
    server.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'more' });
    await waitFor(() => (server.appServiceTransactions(reg.id)[0]?.attempts.length ?? 0) >= 2, { timeoutMs: 20_000, what: 'the second failed attempt' });
    const [first] = server.appServiceTransactions(reg.id);
    expect(first?.retryDelaysMs.slice(0, 2)).toEqual([2_000, 4_000]);
    // the first wait ran out (the second is still running)
    expect(first?.retriedBy[0]).toBe('backoff');
    expect(server.appServiceTransactions(reg.id)).toHaveLength(1);
  });
});

describe('fake homeserver: a successful AS ping ends the retry backoff (Synapse 1.132+)', () => {
  it('retries a failing transaction at once after a ping, and records that the ping, not the backoff, brought the retry', async () => {
    // At Synapse's cap: the next retry would come in 512 s.
    const server = await createFakeHomeserver({ appServiceRetry: { initialMs: 512_000, maxMs: 512_000 } });
    cleanups.push(() => server.stop());
    let accept = false;
    const as = http.createServer((req, res) => {
      req.resume();
      const ok = req.url === '/_matrix/app/v1/ping' || accept;
      res.writeHead(ok ? 200 : 500, { 'Content-Type': 'application/json' });
      res.end(ok ? '{}' : '{"errcode":"M_UNKNOWN","error":"down"}');
    });
    await new Promise<void>((resolve) => as.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => as.close(() => resolve())));
    const reg = registration({ url: `http://127.0.0.1:${(as.address() as AddressInfo).port}`, namespaces: { users: [{ regex: '@_sg_.*', exclusive: true }], rooms: [{ regex: '!.*', exclusive: false }] } });
    server.registerAppService(reg);
    const alice = server.registerUser('alice', 'pw');
    server.createRoom(alice.userId);
    await waitFor(() => (server.appServiceTransactions(reg.id)[0]?.attempts.length ?? 0) >= 1, { timeoutMs: 10_000, what: 'the first failed attempt' });

    accept = true;
    const ping = await fetch(`${server.url}/_matrix/client/v1/appservice/${reg.id}/ping`, { method: 'POST', headers: { Authorization: 'Bearer as-secret', 'Content-Type': 'application/json' }, body: '{}' });
    expect(ping.status).toBe(200);
    await waitFor(() => server.appServiceTransactions(reg.id)[0]?.delivered === true, { timeoutMs: 10_000, what: 'the transaction retried after the ping' });
    const [first] = server.appServiceTransactions(reg.id);
    expect(first?.retryDelaysMs).toEqual([512_000]);
    expect(first?.retriedBy).toEqual(['ping']);
  });
});
