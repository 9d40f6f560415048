/**
 * The connection after an early error answer. Closing a socket while the
 * client is still sending makes the kernel answer with a reset, and a client
 * that reads only once it has sent everything (simple device clients do)
 * then sees EPIPE or ECONNRESET instead of our answer. So what the client
 * still sends is read and thrown away — for at most DRAIN_MS and
 * DRAIN_BODY_LIMITS body limits — before the connection is closed.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

/** How long the rest of a refused request is read and discarded. */
export const DRAIN_MS = 10_000;
/** How much of it, in body limits (`http.bodyLimitBytes`). */
export const DRAIN_BODY_LIMITS = 4;

/**
 * Reads and discards the rest of a request body. True when the body ended
 * within the limits (the connection can stay open); false when the client
 * sent more, took longer or went away.
 */
export function readRest(req: IncomingMessage, maxBytes: number, maxMs = DRAIN_MS): Promise<boolean> {
  // `complete`: the parser has seen the whole body; `readableEnded`: someone read it all (injected requests have only this).
  if (req.complete || req.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    let bytes = 0;
    const done = (ended: boolean) => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      if (!ended) req.pause();
      resolve(ended);
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > maxBytes) done(false);
    };
    const onEnd = () => done(true);
    const onClose = () => done(req.complete);
    const timer = setTimeout(() => done(false), maxMs);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
    req.resume();
  });
}

const lingering = new WeakMap<Socket, number>();

/**
 * For an answer written straight to a socket that the HTTP parser gave up
 * on: after `socket.end(answer)` the socket keeps reading until the client
 * closes its side, the time is up or `maxBytes` more arrived.
 */
export function lingerAfterAnswer(socket: Socket, maxBytes: number, maxMs = DRAIN_MS): void {
  lingering.set(socket, socket.bytesRead + maxBytes);
  const timer = setTimeout(() => socket.destroy(), maxMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Called for every later chunk the failed parser refuses again: closes once the client sent too much. */
export function stillLingering(socket: Socket): void {
  const limit = lingering.get(socket);
  if (limit === undefined || socket.bytesRead > limit) socket.destroy();
}
