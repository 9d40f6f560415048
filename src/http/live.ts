/**
 * Live streams (WebSocket and SSE) on top of `log.tail`: history after the
 * client's cursor, then live, with no gap and no duplicate — the tail
 * guarantees that; this module turns items into frames and keeps each
 * connection bounded.
 *
 * - Every frame carries the sync cursor after it (`next`; the SSE `id`), so a
 *   client resumes exactly where it stopped.
 * - Backpressure: when a socket holds more than `pauseBytes`, the stream stops
 *   taking items from the tail until the socket drains (the tail itself stays
 *   bounded: it falls back to reading history). A client that does not drain
 *   within `stallMs`, or whose socket exceeds `maxBufferedBytes`, is closed
 *   with its last cursor instead of being buffered without bound.
 * - One timer per app sends heartbeats, drops dead WebSocket peers and
 *   re-checks access: a deleted device or changed grants close the stream.
 */
import type { Socket } from 'node:net';
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import type { ErrorCode } from '../core/errors.js';
import { ERROR_TABLE, isSyncgateError } from '../core/errors.js';
import type { EventLog } from '../core/ports.js';
import type { DeviceIdentity, Directory } from './directory.js';
import type { HttpMetrics } from './metrics.js';
import { FrameCache, frameBytes, frameText, joinFrames, wsTextFrame } from './frames.js';
import { telemetryView, type ViewCache } from './view.js';

export type Transport = 'ws' | 'sse';

export type CloseReason = 'client' | 'slow' | 'revoked' | 'access' | 'shutdown' | 'error';

/**
 * Error codes sent in the final frame. `slow` and `access` use the closest
 * existing codes until the table has SG_ERR_STREAM_SLOW / SG_ERR_STREAM_RESET.
 */
const CLOSE_CODES: Readonly<Record<Exclude<CloseReason, 'client'>, { code: ErrorCode; ws: number; message: string }>> = {
  slow: { code: 'SG_ERR_STREAM_SLOW', ws: 4029, message: 'the client did not keep up with the stream; resume from `next`' },
  revoked: { code: 'SG_ERR_AUTH_INVALID', ws: 4001, message: 'the device token was revoked' },
  access: { code: 'SG_ERR_STREAM_RESET', ws: 4003, message: 'the room grants changed; reconnect from `next`' },
  shutdown: { code: 'SG_ERR_LOG_CLOSED', ws: 1001, message: 'the server is shutting down; reconnect from `next`' },
  error: { code: 'SG_ERR_INTERNAL', ws: 1011, message: ERROR_TABLE.SG_ERR_INTERNAL.message },
};

/** How long a closed stream may take to flush its last bytes before its socket is destroyed. */
const CLOSE_FLUSH_MS = 10_000;

/**
 * One connection's wire format. Frames are queued as bytes and leave together
 * at the end of the tick (one write per client per tick); anything written
 * outside the queue that a client orders by (`close`, with its cursor) flushes
 * the queue first.
 */
interface Wire {
  readonly transport: Transport;
  /** queues a frame built for this transport; it is written at the end of the tick */
  queue(frame: Buffer): void;
  /** writes the queued frames now */
  flush(): void;
  /** a telemetry reading (not part of the cursor: it carries none) */
  telemetry(json: string): void;
  heartbeat(): boolean;
  /** bytes queued or written but not yet taken by the kernel */
  buffered(): number;
  /** calls `listener` once the socket drained; returns a function that cancels it */
  onDrain(listener: () => void): () => void;
  close(reason: Exclude<CloseReason, 'client'>, code: ErrorCode, message: string, next: string): void;
  onClosed(listener: () => void): void;
}

/** The per-tick queue both wires share. */
abstract class QueuedWire {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private scheduled = false;

  queue(frame: Buffer): void {
    this.pending.push(frame);
    this.pendingBytes += frame.length;
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const parts = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.writeBytes(joinFrames(parts));
  }

  protected queuedBytes(): number {
    return this.pendingBytes;
  }

  protected abstract writeBytes(bytes: Buffer): void;
}

class WsWire extends QueuedWire implements Wire {
  readonly transport = 'ws' as const;
  private alive = true;
  private missed = 0;
  /**
   * Frames are written to the socket as built (unmasked, uncompressed). With
   * an extension negotiated, ws would have to transform them: go through it.
   */
  private readonly direct: boolean;
  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Socket,
  ) {
    super();
    this.direct = ws.extensions === '';
    ws.on('pong', () => {
      this.alive = true;
      this.missed = 0;
    });
    // Clients have nothing to say on this stream; anything they send is ignored.
  }
  protected writeBytes(bytes: Buffer): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    if (this.direct) {
      this.socket.write(bytes);
      return;
    }
    // One message per frame: split what was joined.
    for (let at = 0; at < bytes.length; ) {
      const marker = (bytes[at + 1] ?? 0) & 0x7f;
      const head = marker === 126 ? 4 : marker === 127 ? 10 : 2;
      const length = marker === 126 ? bytes.readUInt16BE(at + 2) : marker === 127 ? bytes.readUInt32BE(at + 2) * 2 ** 32 + bytes.readUInt32BE(at + 6) : marker;
      this.ws.send(bytes.subarray(at + head, at + head + length), { binary: false });
      at += head + length;
    }
  }
  telemetry(json: string): void {
    this.queue(wsTextFrame(`{"type":"telemetry",${json.slice(1)}`));
  }
  heartbeat(): boolean {
    // Two heartbeats without a pong: the peer is gone (one may be late on a busy host).
    if (!this.alive && ++this.missed >= 2) {
      this.ws.terminate();
      return false;
    }
    this.alive = false;
    this.ws.ping();
    this.queue(wsTextFrame(`{"type":"heartbeat","ts":${Date.now()}}`));
    return true;
  }
  buffered(): number {
    return this.ws.bufferedAmount + this.queuedBytes();
  }
  onDrain(listener: () => void): () => void {
    this.socket.once('drain', listener);
    return () => this.socket.off('drain', listener);
  }
  close(reason: Exclude<CloseReason, 'client'>, code: ErrorCode, message: string, next: string): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    this.flush();
    this.ws.send(JSON.stringify({ type: 'close', code, message, next }));
    this.ws.close(CLOSE_CODES[reason].ws, code);
    // ws gives the peer 30 s to answer the close; a stuck slow client gets less.
    setTimeout(() => this.ws.terminate(), CLOSE_FLUSH_MS).unref();
  }
  onClosed(listener: () => void): void {
    this.ws.once('close', listener);
  }
}

class SseWire extends QueuedWire implements Wire {
  readonly transport = 'sse' as const;
  constructor(private readonly res: ServerResponse) {
    super();
  }
  protected writeBytes(bytes: Buffer): void {
    if (!this.res.writableEnded) this.res.write(bytes);
  }
  private write(text: string): void {
    this.queue(Buffer.from(text, 'utf8'));
  }
  telemetry(json: string): void {
    // No `id`: a reading does not move the client's cursor (Last-Event-ID).
    this.write(`event: telemetry\ndata: ${json}\n\n`);
  }
  heartbeat(): boolean {
    this.write(`event: heartbeat\ndata: {"ts":${Date.now()}}\n\n`);
    return true;
  }
  buffered(): number {
    return this.res.writableLength + (this.res.socket?.writableLength ?? 0) + this.queuedBytes();
  }
  onDrain(listener: () => void): () => void {
    this.res.once('drain', listener);
    return () => this.res.off('drain', listener);
  }
  close(_reason: Exclude<CloseReason, 'client'>, code: ErrorCode, message: string, next: string): void {
    if (this.res.writableEnded) return;
    this.flush();
    this.res.write(`event: close\ndata: ${JSON.stringify({ code, message, next })}\n\n`);
    const socket = this.res.socket;
    // A client that never reads would keep the socket forever; one that does may reuse it (keep-alive).
    const timer = setTimeout(() => socket?.destroy(), CLOSE_FLUSH_MS).unref();
    this.res.once('finish', () => clearTimeout(timer));
    this.res.end();
  }
  onClosed(listener: () => void): void {
    this.res.once('close', listener);
  }
}

export interface LiveHubOptions {
  readonly log: EventLog;
  readonly directory: Directory;
  readonly metrics: HttpMetrics;
  readonly views: ViewCache;
  readonly logger: Logger;
  readonly heartbeatMs: number;
  /** stop taking events for a client whose socket holds more than this */
  readonly pauseBytes: number;
  /** close a client whose socket holds more than this */
  readonly maxBufferedBytes: number;
  /** close a paused client whose socket has not drained within this */
  readonly stallMs: number;
}

export interface StreamStart {
  readonly device: DeviceIdentity;
  /** the rooms granted when the stream opened */
  readonly rooms: ReadonlySet<string>;
  readonly since: string;
  /** also send the rooms' telemetry readings from now on (polled every TELEMETRY_POLL_MS) */
  readonly telemetry?: boolean;
}

/** How often a stream that asked for telemetry looks for new readings. */
export const TELEMETRY_POLL_MS = 1000;
/** Readings per room and poll; a room producing more is sent in the following polls. */
const TELEMETRY_BATCH = 200;

class LiveStream {
  next: string;
  private readonly abort = new AbortController();
  private stopped = false;

  constructor(
    private readonly hub: LiveHub,
    readonly wire: Wire,
    readonly start: StreamStart,
  ) {
    this.next = start.since;
  }

  get device(): DeviceIdentity {
    return this.start.device;
  }

  async run(): Promise<void> {
    const { log, maxBufferedBytes, pauseBytes } = this.hub.options;
    const { frames } = this.hub;
    const transport = this.wire.transport;
    const deviceId = this.device.deviceId;
    this.wire.onClosed(() => this.stop('client'));
    this.wire.queue(frameBytes(transport, frameText(transport, 'ready', this.next)));
    if (this.start.telemetry) void this.streamTelemetry();
    try {
      const tail = log.tail(this.start.since, { rooms: this.start.rooms, signal: this.abort.signal });
      for await (const item of tail) {
        if (this.stopped) break;
        // Items that arrive together leave in one write (the wire's per-tick queue), as bytes shared with every client sent the same.
        this.wire.queue(item.type === 'event' ? frames.event(transport, item.event, item.next, deviceId) : frames.limited(transport, item.next));
        this.next = item.next;
        const buffered = this.wire.buffered();
        if (buffered > maxBufferedBytes || (buffered > pauseBytes && !(await this.drained()))) {
          this.close('slow');
          break;
        }
      }
    } catch (err) {
      if (!this.stopped) {
        const closing = isSyncgateError(err, 'SG_ERR_LOG_CLOSED');
        if (!closing) this.hub.options.logger.error({ err, deviceId: this.device.deviceId }, 'live stream failed');
        this.close(closing ? 'shutdown' : 'error');
      }
    }
  }

  /**
   * Telemetry readings of the stream's rooms that arrive after it opened,
   * oldest first per room. They are not in the timeline and carry no
   * cursor: a reconnecting client gets readings from its reconnect on (older
   * ones are at GET /v1/rooms/:room/telemetry).
   */
  private async streamTelemetry(): Promise<void> {
    const { log, logger, maxBufferedBytes } = this.hub.options;
    const after = new Map<string, string | undefined>();
    try {
      for (const room of this.start.rooms) after.set(room, (await log.telemetry(room, 1))[0]?.id);
      while (!this.stopped) {
        await new Promise<void>((resolve) => {
          const signal = this.abort.signal;
          const done = () => {
            clearTimeout(timer);
            signal.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, TELEMETRY_POLL_MS);
          signal.addEventListener('abort', done);
        });
        for (const [room, from] of after) {
          if (this.stopped) return;
          const rows = from === undefined ? (await log.telemetry(room, TELEMETRY_BATCH)).reverse() : await log.telemetry(room, TELEMETRY_BATCH, { after: from });
          for (const row of rows) this.wire.telemetry(JSON.stringify({ room, reading: telemetryView(row) }));
          const last = rows.at(-1);
          if (last) after.set(room, last.id);
        }
        if (this.wire.buffered() > maxBufferedBytes) {
          this.close('slow');
          return;
        }
      }
    } catch (err) {
      if (this.stopped) return;
      const closing = isSyncgateError(err, 'SG_ERR_LOG_CLOSED');
      if (!closing) logger.error({ err, deviceId: this.device.deviceId }, 'live telemetry failed');
      this.close(closing ? 'shutdown' : 'error');
    }
  }

  /** Waits until the socket drained: true, or false when it stalled for `stallMs` (or the stream stopped). */
  private drained(): Promise<boolean> {
    // What is still queued has to reach the socket first: only the socket says when it drained.
    this.wire.flush();
    if (this.wire.buffered() <= this.hub.options.pauseBytes) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        cancel();
        this.abort.signal.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), this.hub.options.stallMs);
      const cancel = this.wire.onDrain(() => done(true));
      this.abort.signal.addEventListener('abort', onAbort);
    });
  }

  /** Ends the stream from our side, telling the client where to resume. */
  close(reason: Exclude<CloseReason, 'client'>): void {
    if (this.stopped) return;
    const spec = CLOSE_CODES[reason];
    this.wire.close(reason, spec.code, spec.message, this.next);
    this.stop(reason);
  }

  private stop(reason: CloseReason): void {
    if (this.stopped) return;
    this.stopped = true;
    this.abort.abort();
    this.hub.remove(this, reason);
  }
}

export class LiveHub {
  readonly options: LiveHubOptions;
  readonly frames: FrameCache;
  private readonly streams = new Set<LiveStream>();
  private readonly polls = new Set<AbortController>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private closing = false;

  constructor(options: LiveHubOptions) {
    this.options = options;
    this.frames = new FrameCache(options.views);
  }

  get size(): number {
    return this.streams.size;
  }

  openWebSocket(ws: WebSocket, socket: Socket, start: StreamStart): void {
    this.open(new WsWire(ws, socket), start);
  }

  openSse(res: ServerResponse, start: StreamStart): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    this.open(new SseWire(res), start);
  }

  private open(wire: Wire, start: StreamStart): void {
    const stream = new LiveStream(this, wire, start);
    if (this.closing) {
      stream.close('shutdown');
      return;
    }
    this.streams.add(stream);
    this.options.metrics.liveClients.inc({ transport: wire.transport });
    this.timer ??= setInterval(() => void this.tick(), this.options.heartbeatMs).unref();
    void stream.run();
  }

  /** called by a stream once it stopped */
  remove(stream: LiveStream, reason: CloseReason): void {
    if (!this.streams.delete(stream)) return;
    this.options.metrics.liveClients.dec({ transport: stream.wire.transport });
    this.options.metrics.liveClosed.inc({ transport: stream.wire.transport, reason });
    if (this.streams.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** A long-poll registers here so that shutdown answers it at once. */
  trackPoll(controller: AbortController): () => void {
    if (this.closing) controller.abort();
    this.polls.add(controller);
    return () => this.polls.delete(controller);
  }

  /** Heartbeats, dead-peer detection and access re-checks, once per heartbeat period for all streams. */
  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const byDevice = new Map<string, LiveStream[]>();
      for (const s of this.streams) {
        if (!s.wire.heartbeat()) continue;
        const list = byDevice.get(s.device.deviceId) ?? [];
        list.push(s);
        byDevice.set(s.device.deviceId, list);
      }
      // One access check per device, not per stream.
      await Promise.all(
        [...byDevice].map(async ([deviceId, streams]) => {
          const user = streams[0]?.device.user;
          if (user === undefined) return;
          const [exists, grants] = await Promise.all([this.options.directory.deviceExists(deviceId), this.options.directory.grants(user)]);
          const now = new Set(grants);
          for (const s of streams) {
            if (!exists) s.close('revoked');
            else if (now.size !== s.start.rooms.size || grants.some((r) => !s.start.rooms.has(r))) s.close('access');
          }
        }),
      );
    } catch (err) {
      this.options.logger.warn({ err }, 'live stream access check failed; will retry');
    } finally {
      this.ticking = false;
    }
  }

  /** Closes every stream with its cursor and answers pending long-polls (graceful shutdown). */
  closeAll(): void {
    this.closing = true;
    for (const s of [...this.streams]) s.close('shutdown');
    for (const p of this.polls) p.abort();
    this.polls.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
