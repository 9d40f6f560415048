/**
 * The live stream's frames as bytes, built once and shared by every client
 * that is sent the same thing.
 *
 * Live clients on the same rooms see the same events with the same `next`
 * cursor (the tail shares it too), so one event's frame is one Buffer for all
 * of them: no per-client JSON, string or UTF-8 copy. A WebSocket frame is
 * stored with its header (server frames are unmasked), ready for the socket.
 * The frames a client gets in one tick leave in one write; clients in step
 * share that joined write as well.
 */
import type { LogEvent } from '../core/event.js';
import { sentBy, type ViewCache } from './view.js';

export type FrameTransport = 'ws' | 'sse';

/** A final, unmasked WebSocket text frame (RFC 6455 §5.2) carrying `text`. */
export function wsTextFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const head = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + length);
  out[0] = 0x81;
  if (length < 126) {
    out[1] = length;
  } else if (length < 65_536) {
    out[1] = 126;
    out.writeUInt16BE(length, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    out.writeUInt32BE(length >>> 0, 6);
  }
  out.write(text, head, 'utf8');
  return out;
}

/** The payload of a frame built by wsTextFrame. */
export function wsPayloadOf(frame: Buffer): Buffer {
  const marker = (frame[1] ?? 0) & 0x7f;
  return frame.subarray(marker === 126 ? 4 : marker === 127 ? 10 : 2);
}

/** A frame's text in the transport's form (the bytes the client gets). */
export function frameText(transport: FrameTransport, type: 'event' | 'limited' | 'ready', next: string, eventJson?: string): string {
  if (transport === 'ws') {
    return type === 'event' ? `{"type":"event","next":"${next}","event":${eventJson}}` : `{"type":"${type}","next":"${next}"}`;
  }
  if (type === 'event') return `id: ${next}\ndata: ${eventJson}\n\n`;
  return `event: ${type}\nid: ${next}\ndata: {"next":"${next}"}\n\n`;
}

export function frameBytes(transport: FrameTransport, text: string): Buffer {
  return transport === 'ws' ? wsTextFrame(text) : Buffer.from(text, 'utf8');
}

interface Slot {
  readonly next: string;
  readonly bytes: Buffer;
}

export class FrameCache {
  /** per transport: an event's last frame, for the `next` it was built with */
  private readonly slots: Record<FrameTransport, WeakMap<LogEvent, Slot>> = { ws: new WeakMap(), sse: new WeakMap() };
  private readonly limitedSlots: Record<FrameTransport, Map<string, Buffer>> = { ws: new Map(), sse: new Map() };

  constructor(private readonly views: ViewCache) {}

  /** The frame of `event` for `deviceId` with cursor `next`; shared unless the device sent the event (its txnId). */
  event(transport: FrameTransport, event: LogEvent, next: string, deviceId: string): Buffer {
    if (sentBy(event, deviceId) !== undefined) return frameBytes(transport, frameText(transport, 'event', next, this.views.json(event, deviceId)));
    const slots = this.slots[transport];
    const slot = slots.get(event);
    if (slot !== undefined && slot.next === next) return slot.bytes;
    const bytes = frameBytes(transport, frameText(transport, 'event', next, this.views.json(event, deviceId)));
    slots.set(event, { next, bytes });
    return bytes;
  }

  limited(transport: FrameTransport, next: string): Buffer {
    const slots = this.limitedSlots[transport];
    let bytes = slots.get(next);
    if (bytes === undefined) {
      bytes = frameBytes(transport, frameText(transport, 'limited', next));
      // A limited frame is rare; a few recent cursors are enough to share it.
      if (slots.size >= 64) slots.clear();
      slots.set(next, bytes);
    }
    return bytes;
  }
}

const joins = new WeakMap<Buffer, { readonly parts: readonly Buffer[]; readonly joined: Buffer }>();

/**
 * The frames of one tick as one buffer. Clients in step queue the very same
 * frame objects, so the join made for the first of them serves the others.
 */
export function joinFrames(parts: readonly Buffer[]): Buffer {
  const first = parts[0];
  if (first === undefined) return Buffer.alloc(0);
  if (parts.length === 1) return first;
  const hit = joins.get(first);
  if (hit !== undefined && hit.parts.length === parts.length && hit.parts.every((p, i) => p === parts[i])) return hit.joined;
  const joined = Buffer.concat(parts as Buffer[]);
  joins.set(first, { parts, joined });
  return joined;
}
