/**
 * The client-server HTTP requests the adapter makes.
 *
 * Every client-server call goes through `MatrixHttp` (fetch), not
 * matrix-bot-sdk's MatrixClient, because the adapter needs what the SDK
 * hides or gets wrong for a bridge (docs/protocols.md, "Matrix"): the
 * Retry-After header of a 429 (the SDK drops headers), our own transaction
 * ids on PUT …/send/{type}/{txnId} (its helpers mint their own, so a retry
 * would duplicate), an AbortSignal so stop() ends a 30-second /sync
 * long-poll at once, and exact status codes. The adapter does not load
 * matrix-bot-sdk at all: its end-to-end encryption needs the native
 * `@matrix-org/matrix-sdk-crypto-nodejs`, whose binary is downloaded at
 * install time; ours is the wasm build (crypto/machine.ts).
 */
import { MatrixApiError, MatrixNetworkError } from './errors.js';

// ------------------------------------------------------------------ requests

export type JsonObject = Record<string, unknown>;

/** A path with every interpolated value percent-encoded: mxPath`/rooms/${roomId}/send/${type}/${txnId}`. */
export function mxPath(strings: TemplateStringsArray, ...values: readonly string[]): string {
  return strings.reduce((out, s, i) => out + s + (i < values.length ? encodeURIComponent(values[i] ?? '') : ''), '');
}

/** Retry-After is seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The longer of the header and the (deprecated) body field: both are what the server asked for. */
export function retryAfterMs(header: string | null, body: unknown): number | undefined {
  const fromHeader = parseRetryAfter(header);
  const ms = typeof body === 'object' && body !== null ? (body as { retry_after_ms?: unknown }).retry_after_ms : undefined;
  const fromBody = typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined;
  if (fromHeader === undefined) return fromBody;
  if (fromBody === undefined) return fromHeader;
  return Math.max(fromHeader, fromBody);
}

export interface RequestOptions {
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly body?: unknown;
  /** application-service identity assertion (`?user_id=`) */
  readonly asUser?: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** false for /login and /versions */
  readonly auth?: boolean;
  /** a body that is not JSON (a media upload) */
  readonly raw?: { readonly data: Uint8Array; readonly contentType: string };
}

export interface HttpCounters {
  requests: number;
  failures: number;
  rateLimited: number;
}

export interface MatrixHttpOptions {
  readonly baseUrl: string;
  readonly accessToken: string;
  readonly timeoutMs: number;
}

export class MatrixHttp {
  readonly counters: HttpCounters = { requests: 0, failures: 0, rateLimited: 0 };
  /** time of the last answer from the homeserver (any status), for readiness */
  lastAnswerAt = 0;
  /** the last request failed without an answer */
  unreachable = false;
  /** why the last request that got no answer failed (kept after the homeserver answers again) */
  lastError: string | undefined;
  private readonly baseUrl: string;
  private accessToken: string;
  private readonly timeoutMs: number;

  constructor(options: MatrixHttpOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.accessToken = options.accessToken;
    this.timeoutMs = options.timeoutMs;
  }

  setAccessToken(token: string): void {
    this.accessToken = token;
  }

  async request(method: string, path: string, options: RequestOptions = {}): Promise<JsonObject> {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    if (options.asUser !== undefined) url.searchParams.set('user_id', options.asUser);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (options.auth !== false) headers['Authorization'] = `Bearer ${this.accessToken}`;
    let body: string | Uint8Array | undefined;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(options.body);
    } else if (options.raw !== undefined) {
      headers['Content-Type'] = options.raw.contentType;
      body = options.raw.data;
    }
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    this.counters.requests++;
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, { method, headers, body, signal });
      text = await res.text();
    } catch (err) {
      this.counters.failures++;
      this.unreachable = true;
      const why = timeout.aborted ? `timed out after ${options.timeoutMs ?? this.timeoutMs} ms` : err instanceof Error ? err.message : String(err);
      this.lastError = `${method} ${url.pathname}: ${why}`;
      throw new MatrixNetworkError(this.lastError, { cause: err });
    }
    this.unreachable = false;
    this.lastAnswerAt = Date.now();
    let json: unknown = {};
    if (text.length > 0) {
      try {
        json = JSON.parse(text) as unknown;
      } catch {
        json = undefined;
      }
    }
    if (!res.ok) {
      this.counters.failures++;
      const errBody = typeof json === 'object' && json !== null ? (json as JsonObject) : {};
      const errcode = typeof errBody['errcode'] === 'string' ? errBody['errcode'] : 'M_UNKNOWN';
      const message = typeof errBody['error'] === 'string' ? errBody['error'] : res.statusText;
      const wait = res.status === 429 || errcode === 'M_LIMIT_EXCEEDED' ? retryAfterMs(res.headers.get('retry-after'), errBody) : undefined;
      if (wait !== undefined || res.status === 429) this.counters.rateLimited++;
      throw new MatrixApiError(res.status, errcode, `${method} ${url.pathname}: ${message}`, wait, errBody);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new MatrixApiError(res.status, 'M_NOT_JSON', `${method} ${url.pathname}: the answer is not a JSON object`);
    }
    return json as JsonObject;
  }
  /**
   * Downloads a file of the media repository: the authenticated endpoint
   * (`/_matrix/client/v1/media/download`, spec v1.11, what Synapse serves
   * with `enable_authenticated_media`), and the old unauthenticated
   * `/_matrix/media/v3/download` only when the homeserver does not know the
   * new one (M_UNRECOGNIZED: before v1.11). More than `maxBytes` is refused.
   */
  async download(mxc: string, maxBytes: number): Promise<{ data: Buffer; contentType: string }> {
    const m = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(mxc);
    if (!m) throw new MatrixApiError(400, 'M_INVALID_PARAM', `not an mxc:// URI: ${mxc}`);
    const tail = `${encodeURIComponent(m[1] ?? '')}/${encodeURIComponent(m[2] ?? '')}`;
    try {
      return await this.fetchMedia(`/_matrix/client/v1/media/download/${tail}`, maxBytes, true);
    } catch (err) {
      if (!(err instanceof MatrixApiError) || err.errcode !== 'M_UNRECOGNIZED') throw err;
      return this.fetchMedia(`/_matrix/media/v3/download/${tail}`, maxBytes, false);
    }
  }

  private async fetchMedia(path: string, maxBytes: number, auth: boolean): Promise<{ data: Buffer; contentType: string }> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    this.counters.requests++;
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, { headers: auth ? { Authorization: `Bearer ${this.accessToken}` } : {}, signal: timeout, redirect: 'follow' });
    } catch (err) {
      this.counters.failures++;
      throw new MatrixNetworkError(`GET ${path}: ${timeout.aborted ? `timed out after ${this.timeoutMs} ms` : err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    this.lastAnswerAt = Date.now();
    if (!res.ok) {
      this.counters.failures++;
      const body = (await res.json().catch(() => ({}))) as JsonObject;
      const errcode = typeof body['errcode'] === 'string' ? body['errcode'] : 'M_UNKNOWN';
      throw new MatrixApiError(res.status, errcode, `GET ${path}: ${typeof body['error'] === 'string' ? body['error'] : res.statusText}`, res.status === 429 ? retryAfterMs(res.headers.get('retry-after'), body) : undefined);
    }
    const declared = Number(res.headers.get('content-length') ?? 'NaN');
    if (Number.isFinite(declared) && declared > maxBytes) {
      await res.body?.cancel();
      throw new MatrixApiError(413, 'M_TOO_LARGE', `GET ${path}: ${declared} bytes, over the limit of ${maxBytes}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of res.body ?? []) {
        size += (chunk as Uint8Array).length;
        if (size > maxBytes) throw new MatrixApiError(413, 'M_TOO_LARGE', `GET ${path}: over the limit of ${maxBytes} bytes`);
        chunks.push(Buffer.from(chunk as Uint8Array));
      }
    } catch (err) {
      if (err instanceof MatrixApiError) throw err;
      throw new MatrixNetworkError(`GET ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return { data: Buffer.concat(chunks), contentType: res.headers.get('content-type')?.split(';')[0]?.trim() ?? 'application/octet-stream' };
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal?.addEventListener('abort', done, { once: true });
  });
}
