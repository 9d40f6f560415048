/**
 * The application-service endpoint the homeserver pushes to (AS API), served
 * with node:http rather than matrix-bot-sdk's `Appservice`, which answers 200
 * before its event handlers finish (a crash then loses the transaction),
 * answers 401 where the spec says 403, compares the token in non-constant
 * time and has no body limit (docs/protocols.md, "Matrix").
 *
 * Here `PUT /_matrix/app/v1/transactions/{txnId}` answers 200 only after the
 * handler resolved, i.e. after every event is durable in the log and the
 * transaction id is stored as completed. Anything else (the handler threw,
 * the process is stopping or dies) leaves the homeserver without a 200, and
 * it sends the same transaction again.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { isObject, type JsonObject } from './normalise.js';

export interface AppserviceServerDeps {
  readonly hsToken: string;
  readonly maxBodyBytes: number;
  readonly log: Logger;
  /** resolves once the transaction is durable; throwing makes the homeserver retry */
  readonly onTransaction: (txnId: string, body: JsonObject) => Promise<void>;
  /** a transaction was stored after the homeserver stopped waiting for the answer (it will send it again after its backoff) */
  readonly onUnanswered?: (txnId: string) => void;
}

export interface AppserviceCounters {
  requests: number;
  transactions: number;
  unauthorised: number;
  rejected: number;
  failed: number;
  /** transactions the homeserver stopped waiting for (its request timed out) before they were answered */
  abandoned: number;
}

interface Answer {
  readonly status: number;
  readonly body: JsonObject;
}

const err = (status: number, errcode: string, error: string): Answer => ({ status, body: { errcode, error } });

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export class AppserviceServer {
  readonly counters: AppserviceCounters = { requests: 0, transactions: 0, unauthorised: 0, rejected: 0, failed: 0, abandoned: 0 };
  lastTransactionAt = 0;
  private readonly server: http.Server;
  private readonly tokenDigest: Buffer;
  private closing = false;

  constructor(private readonly deps: AppserviceServerDeps) {
    this.tokenDigest = digest(deps.hsToken);
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        this.deps.log.error({ err: e }, 'application-service request failed');
        if (!res.headersSent && !res.destroyed) this.send(res, err(500, 'M_UNKNOWN', 'internal error'));
      });
    });
    // A stuck homeserver connection must not hold a stop() forever.
    this.server.requestTimeout = 120_000;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  address(): AddressInfo | undefined {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    this.closing = false;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.address();
    if (!address) throw new Error('the application-service listener has no address');
    return address;
  }

  /** Stops accepting and drops open connections: a transaction in flight gets no 200, so it comes again. */
  async close(): Promise<void> {
    this.closing = true;
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.counters.requests++;
    const url = new URL(req.url ?? '/', 'http://as');
    const route = this.route(req.method ?? 'GET', url.pathname);
    if (route.kind === 'unknown') {
      req.resume();
      return this.send(res, err(404, 'M_UNRECOGNIZED', 'Unrecognized request'));
    }
    if (route.kind === 'wrong-method') {
      req.resume();
      return this.send(res, err(405, 'M_UNRECOGNIZED', 'Unrecognized request'));
    }
    const auth = this.authorise(req, url);
    if (auth) {
      this.counters.unauthorised++;
      this.deps.log.warn({ status: auth.status, path: url.pathname, remote: req.socket.remoteAddress }, 'application-service request refused: missing or wrong hs_token');
      req.resume();
      return this.send(res, auth);
    }
    if (this.closing) {
      req.resume();
      return this.send(res, err(503, 'M_UNKNOWN', 'shutting down'));
    }
    switch (route.kind) {
      case 'ping':
        req.resume();
        return this.send(res, { status: 200, body: {} });
      case 'query':
        // We create no users or rooms on demand.
        req.resume();
        return this.send(res, err(404, 'M_NOT_FOUND', 'Not found'));
      case 'transaction':
        return this.transaction(req, res, route.txnId);
    }
  }

  private route(method: string, path: string):
    | { kind: 'transaction'; txnId: string }
    | { kind: 'ping' | 'query' | 'unknown' | 'wrong-method' } {
    // The legacy unprefixed paths are still sent by some homeservers.
    const rest = path.startsWith('/_matrix/app/v1/') ? path.slice('/_matrix/app/v1/'.length) : path.slice(1);
    const parts = rest.split('/');
    const expect = (m: string): boolean => method === m;
    if (parts[0] === 'transactions' && parts.length === 2 && parts[1] !== '') {
      let txnId: string;
      try {
        txnId = decodeURIComponent(parts[1] ?? '');
      } catch {
        return { kind: 'unknown' };
      }
      return expect('PUT') ? { kind: 'transaction', txnId } : { kind: 'wrong-method' };
    }
    if (parts[0] === 'ping' && parts.length === 1 && path.startsWith('/_matrix/app/v1/')) return expect('POST') ? { kind: 'ping' } : { kind: 'wrong-method' };
    if ((parts[0] === 'users' || parts[0] === 'rooms') && parts.length === 2) return expect('GET') ? { kind: 'query' } : { kind: 'wrong-method' };
    return { kind: 'unknown' };
  }

  /** AS API "Authorization": no token → 401 M_UNAUTHORIZED, a wrong one → 403 M_FORBIDDEN. */
  private authorise(req: http.IncomingMessage, url: URL): Answer | undefined {
    const header = req.headers['authorization'];
    let token: string | undefined;
    if (typeof header === 'string') token = /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim();
    // The query parameter is how homeservers authenticated before spec v1.4.
    token ??= url.searchParams.get('access_token') ?? undefined;
    if (token === undefined || token === '') return err(401, 'M_UNAUTHORIZED', 'Missing hs_token');
    if (!timingSafeEqual(digest(token), this.tokenDigest)) return err(403, 'M_FORBIDDEN', 'Wrong hs_token');
    return undefined;
  }

  private async transaction(req: http.IncomingMessage, res: http.ServerResponse, txnId: string): Promise<void> {
    const raw = await this.readBody(req);
    if (raw === 'too-large') {
      this.counters.rejected++;
      this.deps.log.warn({ txnId, maxBodyBytes: this.deps.maxBodyBytes }, 'application-service transaction refused: body too large');
      res.setHeader('Connection', 'close');
      return this.send(res, err(413, 'M_TOO_LARGE', 'Transaction too large'));
    }
    if (raw === 'aborted') return;
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8')) as unknown;
    } catch {
      this.counters.rejected++;
      this.deps.log.warn({ txnId }, 'application-service transaction refused: body is not JSON');
      return this.send(res, err(400, 'M_NOT_JSON', 'Content not JSON'));
    }
    if (!isObject(body) || !Array.isArray(body['events'])) {
      this.counters.rejected++;
      this.deps.log.warn({ txnId }, 'application-service transaction refused: no events array');
      return this.send(res, err(400, 'M_BAD_JSON', 'events must be an array'));
    }
    // The homeserver hanging up before the answer: it will send the transaction again after its backoff.
    res.once('close', () => {
      if (!res.writableFinished) this.counters.abandoned++;
    });
    try {
      await this.deps.onTransaction(txnId, body);
    } catch (e) {
      this.counters.failed++;
      this.deps.log.error({ err: e, txnId }, 'application-service transaction not stored; the homeserver will send it again');
      if (!res.destroyed) this.send(res, err(500, 'M_UNKNOWN', 'Transaction not stored; retry'));
      return;
    }
    this.counters.transactions++;
    this.lastTransactionAt = Date.now();
    if (res.destroyed) {
      this.deps.log.info({ txnId }, 'application-service transaction stored after the homeserver stopped waiting for the answer; it will come again and be answered 200');
      this.deps.onUnanswered?.(txnId);
      return;
    }
    this.send(res, { status: 200, body: {} });
  }

  private readBody(req: http.IncomingMessage): Promise<Buffer | 'too-large' | 'aborted'> {
    return new Promise((resolve) => {
      const declared = Number(req.headers['content-length'] ?? '0');
      if (Number.isFinite(declared) && declared > this.deps.maxBodyBytes) {
        req.resume();
        resolve('too-large');
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      req.on('data', (c: Buffer) => {
        if (done) return;
        size += c.length;
        if (size > this.deps.maxBodyBytes) {
          done = true;
          chunks.length = 0;
          resolve('too-large');
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => {
        if (done) return;
        done = true;
        resolve(Buffer.concat(chunks));
      });
      req.on('error', () => {
        if (done) return;
        done = true;
        resolve('aborted');
      });
      req.on('close', () => {
        if (done) return;
        done = true;
        resolve('aborted');
      });
    });
  }

  private send(res: http.ServerResponse, answer: Answer): void {
    if (res.headersSent || res.destroyed) return;
    const payload = JSON.stringify(answer.body);
    res.writeHead(answer.status, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(payload)) });
    res.end(payload);
  }
}
