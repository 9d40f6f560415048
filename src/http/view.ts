/**
 * What a device sees of an event: the log event without its idempotency key
 * and without the API's internal origin ids (`api.txnId`, `api.device`); the
 * device that sent it also gets `unsigned.txnId` (as Matrix does with
 * `unsigned.transaction_id`), so it can match the live copy to its send.
 */
import type { LogEvent } from '../core/event.js';
import type { DeviceView, TelemetryEntry } from '../core/ports.js';

export const TXN_ID = 'api.txnId';
export const DEVICE_ID = 'api.device';

export type EventView = Omit<LogEvent, 'idem'> & { readonly unsigned?: { readonly txnId: string } };

function isPrivateId(key: string): boolean {
  return key === TXN_ID || key === DEVICE_ID;
}

/** viewFor as the log's DeviceView: what EventLog.readJson writes a sync page's events with */
export function deviceView(deviceId: string): DeviceView {
  return { hiddenIds: [TXN_ID, DEVICE_ID], echo: { deviceKey: DEVICE_ID, txnKey: TXN_ID, deviceId } };
}

export function sentBy(event: LogEvent, deviceId: string): string | undefined {
  const ids = event.origin.ids;
  return ids[DEVICE_ID] === deviceId ? ids[TXN_ID] : undefined;
}

export function viewFor(event: LogEvent, deviceId: string): EventView {
  const ids = event.origin.ids;
  let origin = event.origin;
  if (Object.hasOwn(ids, TXN_ID) || Object.hasOwn(ids, DEVICE_ID)) {
    origin = { ...event.origin, ids: Object.fromEntries(Object.entries(ids).filter(([k]) => !isPrivateId(k))) };
  }
  // A key-by-key copy in the event's own order (idem left out): object rest and
  // spread took microseconds an event in V8, a catch-up page's largest cost (issue 19).
  const view: Record<string, unknown> = {};
  for (const key of Object.keys(event) as Array<keyof LogEvent>) {
    if (key !== 'idem') view[key] = key === 'origin' ? origin : event[key];
  }
  const txnId = sentBy(event, deviceId);
  if (txnId !== undefined) view['unsigned'] = { txnId };
  return view as EventView;
}

/**
 * JSON of event views for the live stream: every device but the sender sees
 * the same bytes, so they are serialised once per event, not once per client.
 */
export class ViewCache {
  private readonly cache = new Map<string, string>();
  constructor(private readonly capacity = 4096) {}

  json(event: LogEvent, deviceId: string): string {
    if (sentBy(event, deviceId) !== undefined) return JSON.stringify(viewFor(event, deviceId));
    const hit = this.cache.get(event.eventId);
    if (hit !== undefined) return hit;
    // Any device id that did not send it gives the shared view.
    const json = JSON.stringify(viewFor(event, ''));
    this.cache.set(event.eventId, json);
    if (this.cache.size > this.capacity) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
    }
    return json;
  }
}

export interface TelemetryView {
  readonly id: string;
  readonly sender: { readonly uid: string; readonly proto: string; readonly display?: string };
  readonly ts: { readonly received: number; readonly origin?: number };
  readonly topic?: string;
  readonly contentType: string;
  readonly payload: string;
}

/** A telemetry reading as devices see it: no idempotency key or internal origin ids. */
export function telemetryView(entry: TelemetryEntry): TelemetryView {
  const { sender, ts, telemetry } = entry.event;
  return {
    id: entry.id,
    sender: { uid: sender.uid, proto: sender.proto, ...(sender.display !== undefined ? { display: sender.display } : {}) },
    ts,
    ...(telemetry.topic !== undefined ? { topic: telemetry.topic } : {}),
    contentType: telemetry.contentType,
    payload: telemetry.payload,
  };
}

/**
 * A sync page's response body, `{"events":[…],"next":…,"limited":…}`, as
 * UTF-8 bytes written straight from the events' JSON texts into one buffer.
 * A page of 1,000 events built as one string (join, then UTF-8 encoding on
 * send) took about 4 times the CPU of writing each event's text into the
 * buffer: the events' texts are built from pieces, and flattening them in a
 * join cost more than writing them out (issue 19).
 */
export function syncPageBody(events: readonly string[], next: string, limited: boolean): Buffer {
  const tail = `],"next":${JSON.stringify(next)},"limited":${limited}}`;
  // UTF-8 takes at most 3 bytes per UTF-16 code unit: an upper bound, no length pass over the texts
  let bound = 11 + events.length + tail.length * 3;
  for (const json of events) bound += json.length * 3;
  const out = Buffer.allocUnsafe(bound);
  let n = out.write('{"events":[', 0, 'latin1');
  for (let i = 0; i < events.length; i++) {
    if (i > 0) out[n++] = 44; // ,
    n += out.write(events[i] ?? '', n, 'utf8');
  }
  n += out.write(tail, n, 'utf8');
  return out.subarray(0, n);
}
