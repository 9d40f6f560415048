/**
 * Helpers for the HTTP API tests: an app on a memory or Redis log, one client
 * interface over `inject` or real HTTP, a WebSocket and an SSE client that
 * collect frames, the console's live room timeline, and deadline-bound waiting.
 */
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import WebSocket from 'ws';
import type { Config } from '../../../src/config/index.js';
import type { EventLog } from '../../../src/core/ports.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { buildApp, type AppDeps } from '../../../src/http/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { testPrefix } from '../../harness/redis.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

export function httpConfig(overrides: Partial<Config['http']> = {}): Config['http'] {
  return {
    host: '127.0.0.1',
    port: 0,
    adminToken: ADMIN_TOKEN,
    bodyLimitBytes: 64 * 1024,
    rateLimit: { perSecond: 10_000, burst: 10_000 },
    syncTimeoutMaxMs: 30_000,
    heartbeatMs: 15_000,
    trustProxy: false,
    cors: { origins: [] },
    viewerTokens: [],
    console: false,
    ...overrides,
  };
}

export interface LogOptions {
  readonly redisUrl?: string;
  /** the key prefix: give two logs the same one to act as two replicas */
  readonly prefix?: string;
  readonly partitions?: number;
}

export function makeLog(options: LogOptions = {}): EventLog {
  return createEventLog({
    partitions: options.partitions ?? 4,
    log: silentLogger(),
    ...(options.redisUrl ? { redis: { url: options.redisUrl, prefix: options.prefix ?? testPrefix('http') } } : {}),
  });
}

export interface TestApp {
  readonly app: FastifyInstance;
  readonly log: EventLog;
  readonly client: ApiClient;
  /** base URL when listening */
  readonly url: string | undefined;
  close(): Promise<void>;
}

export interface AppOptions {
  readonly log?: EventLog;
  readonly config?: Partial<Config['http']>;
  readonly listen?: boolean;
  readonly deps?: Partial<Pick<AppDeps, 'status' | 'registry' | 'stream' | 'rateLimitStore' | 'bodyLimits' | 'media'>>;
  /** the log is shared with other apps: do not close it with this one */
  readonly sharedLog?: boolean;
}

export async function startApp(options: AppOptions = {}): Promise<TestApp> {
  const log = options.log ?? makeLog();
  const app = await buildApp({ log, logger: silentLogger(), config: httpConfig(options.config), ...options.deps });
  let url: string | undefined;
  if (options.listen) {
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    url = `http://127.0.0.1:${address.port}`;
  }
  const client = url ? fetchClient(url) : injectClient(app);
  return {
    app,
    log,
    client,
    url,
    close: async () => {
      await app.close();
      if (!options.sharedLog) await log.close();
    },
  };
}

/** An event as the API shows it (the fields the tests look at). */
export interface EventJson {
  readonly eventId: string;
  readonly cursor: string;
  readonly kind: string;
  readonly room: string;
  readonly idem?: string;
  readonly content?: { readonly body: string; readonly format?: string; readonly formatted?: string };
  readonly rel?: Readonly<Record<string, string>>;
  readonly reaction?: { readonly keys: string[] };
  readonly unsigned?: { readonly txnId: string };
  readonly sender: { readonly uid: string; readonly display?: string };
  readonly origin: { readonly ids: Readonly<Record<string, string>> };
}

/**
 * A response body as the tests read it: the union of the fields of every
 * answer. A field a response lacks is undefined at run time, which fails the
 * test that reads it.
 */
export interface ApiBody {
  readonly [key: string]: unknown;
  readonly code: string;
  readonly message: string;
  readonly details: { readonly problems?: string[]; readonly [key: string]: unknown };
  readonly eventId: string;
  readonly cursor: string;
  readonly events: EventJson[];
  readonly next: string;
  readonly limited: boolean;
  readonly token: string;
  readonly deviceId: string;
  readonly upTo: string | null;
  readonly status: string;
}

export interface ApiResponse {
  readonly status: number;
  readonly headers: Record<string, string | undefined>;
  readonly body: ApiBody;
  readonly text: string;
}

export interface RequestOptions {
  readonly token?: string;
  readonly body?: unknown;
  readonly raw?: string;
  readonly headers?: Record<string, string>;
}

export interface ApiClient {
  request(method: string, path: string, options?: RequestOptions): Promise<ApiResponse>;
}

function headersFor(options: RequestOptions): Record<string, string> {
  const h: Record<string, string> = { ...options.headers };
  if (options.token) h['authorization'] = `Bearer ${options.token}`;
  if (options.body !== undefined || options.raw !== undefined) h['content-type'] ??= 'application/json';
  return h;
}

function parse(text: string): ApiBody {
  try {
    return JSON.parse(text) as ApiBody;
  } catch {
    return {} as ApiBody;
  }
}

export function injectClient(app: FastifyInstance): ApiClient {
  return {
    async request(method, path, options = {}) {
      const r = await app.inject({
        method: method as 'GET',
        url: path,
        headers: headersFor(options),
        ...(options.raw !== undefined ? { payload: options.raw } : options.body !== undefined ? { payload: JSON.stringify(options.body) } : {}),
      });
      const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, v === undefined ? undefined : String(v)]));
      return { status: r.statusCode, headers, body: parse(r.body), text: r.body };
    },
  };
}

export function fetchClient(base: string): ApiClient {
  return {
    async request(method, path, options = {}) {
      const r = await fetch(base + path, {
        method,
        headers: headersFor(options),
        ...(options.raw !== undefined ? { body: options.raw } : options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      });
      const text = await r.text();
      return { status: r.status, headers: Object.fromEntries(r.headers.entries()), body: parse(text), text };
    },
  };
}

/** Throws with the response when the status is not the expected one. */
export function expectStatus(r: ApiResponse, status: number): ApiResponse {
  if (r.status !== status) throw new Error(`expected HTTP ${status}, got ${r.status}: ${r.text}`);
  return r;
}

// --- setting up users, devices and rooms through the admin API

export async function adminRoom(client: ApiClient, room: string, name?: string): Promise<void> {
  expectStatus(await client.request('PUT', `/v1/admin/rooms/${room}`, { token: ADMIN_TOKEN, body: { links: [], ...(name ? { name } : {}) } }), 200);
}

export async function adminUser(client: ApiClient, id: string, rooms: string[] = []): Promise<void> {
  expectStatus(await client.request('POST', '/v1/admin/users', { token: ADMIN_TOKEN, body: { id, display: id.toUpperCase() } }), 201);
  for (const room of rooms) expectStatus(await client.request('PUT', `/v1/admin/users/${id}/rooms/${room}`, { token: ADMIN_TOKEN }), 204);
}

export interface TestDevice {
  readonly deviceId: string;
  readonly token: string;
  readonly user: string;
}

export async function adminDevice(client: ApiClient, user: string): Promise<TestDevice> {
  const r = expectStatus(await client.request('POST', '/v1/admin/devices', { token: ADMIN_TOKEN, body: { user, name: `${user} device` } }), 201);
  return { deviceId: r.body.deviceId, token: r.body.token, user };
}

let txnCounter = 0;
export function nextTxn(): string {
  return `txn-${process.pid}-${++txnCounter}`;
}

export async function send(client: ApiClient, device: TestDevice, room: string, body: string, txnId = nextTxn()): Promise<{ eventId: string; cursor: string; txnId: string }> {
  const r = expectStatus(await client.request('PUT', `/v1/rooms/${room}/send/${txnId}`, { token: device.token, body: { kind: 'message', content: { body } } }), 200);
  return { eventId: r.body.eventId, cursor: r.body.cursor, txnId };
}

/** Every event after `since`, paging with /v1/sync until a page comes back empty. */
export async function syncAll(client: ApiClient, device: TestDevice, since: string): Promise<{ events: EventJson[]; next: string }> {
  const events: EventJson[] = [];
  let next = since;
  for (;;) {
    const r = expectStatus(await client.request('GET', `/v1/sync?since=${next}&limit=1000`, { token: device.token }), 200);
    events.push(...r.body.events);
    next = r.body.next;
    if (r.body.events.length === 0) return { events, next };
  }
}

// --- waiting

export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// --- live clients

export interface Frame {
  readonly type: string;
  readonly next?: string;
  readonly event?: EventJson;
  readonly code?: string;
}

export class WsClient {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | undefined;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.frames.push(JSON.parse(String(data)) as Frame));
    ws.on('close', (code, reason) => (this.closed = { code, reason: String(reason) }));
  }

  /** Opens and waits for the `ready` frame; rejects with the HTTP status when the upgrade is refused. */
  static async connect(base: string, query: Record<string, string>, headers: Record<string, string> = {}, options: { autoPong?: boolean } = {}): Promise<WsClient> {
    const url = `${base.replace(/^http/, 'ws')}/v1/stream?${new URLSearchParams(query).toString()}`;
    const ws = new WebSocket(url, { headers, ...options });
    const client = new WsClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => reject(new HttpRefused(res.statusCode ?? 0)));
      ws.once('error', reject);
    });
    await waitFor(() => client.frames.some((f) => f.type === 'ready'), 'the ready frame');
    return client;
  }

  events(): Frame[] {
    return this.frames.filter((f) => f.type === 'event');
  }

  lastNext(): string | undefined {
    return this.frames.filter((f) => f.next !== undefined).at(-1)?.next;
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.close();
    await closed;
  }
}

export class HttpRefused extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

export interface SseMessage {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: string;
}

export class SseClient {
  readonly messages: SseMessage[] = [];
  lastEventId: string | undefined;
  ended = false;
  private readonly abort = new AbortController();
  private constructor() {}

  static async connect(base: string, options: { token: string; since?: string; lastEventId?: string }): Promise<SseClient> {
    const client = new SseClient();
    const query = options.since ? `?since=${options.since}` : '';
    const res = await fetch(`${base}/v1/stream${query}`, {
      headers: {
        accept: 'text/event-stream',
        authorization: `Bearer ${options.token}`,
        ...(options.lastEventId ? { 'last-event-id': options.lastEventId } : {}),
      },
      signal: client.abort.signal,
    });
    if (res.status !== 200 || !res.body) throw new HttpRefused(res.status);
    void client.read(res.body);
    await waitFor(() => client.messages.some((m) => m.event === 'ready'), 'the SSE ready event');
    return client;
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of body) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          let id: string | undefined;
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') event = value;
            else if (field === 'id') id = value;
            else if (field === 'data') data.push(value);
          }
          if (id !== undefined) this.lastEventId = id;
          this.messages.push({ event, id, data: data.join('\n') });
        }
      }
    } catch {
      // aborted by close()
    }
    this.ended = true;
  }

  events(): Array<{ id: string | undefined; event: EventJson }> {
    return this.messages.filter((m) => m.event === 'message').map((m) => ({ id: m.id, event: JSON.parse(m.data) as EventJson }));
  }

  close(): void {
    this.abort.abort();
  }
}

/** A frame of the console's live room timeline: its event name and its data, parsed. */
export interface LiveFrame {
  name: string;
  data: unknown;
}

/** Opens `GET /v1/admin/rooms/:room/live` (expecting 200 and an event stream) and collects its frames until `close()`. */
export async function openLiveTimeline(base: string, room: string, options: { token: string; limit: number }): Promise<{ frames: LiveFrame[]; close: () => void }> {
  const abort = new AbortController();
  const res = await fetch(`${base}/v1/admin/rooms/${room}/live?limit=${options.limit}`, { headers: { authorization: `Bearer ${options.token}`, accept: 'text/event-stream' }, signal: abort.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const frames: LiveFrame[] = [];
  const body = res.body;
  if (!body) throw new Error('no body');
  void (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let at: number;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const name = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
          const data = /^data: (.*)$/m.exec(block)?.[1];
          frames.push({ name, data: data === undefined ? undefined : JSON.parse(data) });
        }
      }
    } catch {
      // aborted by close()
    }
  })();
  return { frames, close: () => abort.abort() };
}
