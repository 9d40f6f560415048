/**
 * How far behind each HTTP device is (the console's Devices page): when a
 * device asks `/v1/sync?since=X` it has everything up to X, so X and the
 * time are noted — from an onResponse hook, without touching the sync path
 * itself, and at most once per device every few seconds (a shared state-store
 * write). A device's lag is then the age of the oldest event after its X in
 * its granted rooms. A device on the live stream is noted when it connects.
 */
import type { FastifyInstance } from 'fastify';
import type { StateStore } from '../core/ports.js';

export const DEVICE_SEEN_NS = 'http:device-seen';
const NOTE_EVERY_MS = 5000;

export interface DeviceSeen {
  /** the last `since` the device synced from: it had everything up to there */
  readonly since: string;
  readonly at: number;
}

export function trackDevicePositions(app: FastifyInstance, state: StateStore): void {
  const lastNoted = new Map<string, number>();
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url;
    if ((route !== '/v1/sync' && route !== '/v1/stream') || reply.statusCode >= 300 || !request.device) return;
    const since = (request.query as { since?: unknown } | undefined)?.since;
    if (typeof since !== 'string' || since === '') return;
    const now = Date.now();
    const deviceId = request.device.deviceId;
    if (now - (lastNoted.get(deviceId) ?? 0) < NOTE_EVERY_MS) return;
    lastNoted.set(deviceId, now);
    if (lastNoted.size > 100_000) lastNoted.clear();
    const seen: DeviceSeen = { since, at: now };
    // best effort: a lost note only makes the lag shown older
    await state.set(DEVICE_SEEN_NS, deviceId, JSON.stringify(seen)).catch(() => undefined);
  });
}

export async function devicePositions(state: StateStore): Promise<Map<string, DeviceSeen>> {
  const out = new Map<string, DeviceSeen>();
  for (const [deviceId, raw] of await state.entries(DEVICE_SEEN_NS)) {
    try {
      const seen = JSON.parse(raw) as DeviceSeen;
      if (typeof seen.since === 'string' && typeof seen.at === 'number') out.set(deviceId, seen);
    } catch {
      // a damaged note: as if never seen
    }
  }
  return out;
}
