/**
 * What the adapter reports: readiness, the status detail, and the counters
 * and drop reasons every other module bumps (`drop` also rate-limits the log
 * lines of ignored stanzas).
 */
import { omemoStatus } from './omemo.js';
import type { AdapterStatus, IngestResult } from '../../src/core/adapter.js';
import type { DropReason } from './errors.js';
import type { MucState, XmppAdapterState } from './state.js';

const DROP_LOG_WINDOW_MS = 10_000;
const DROP_LOGS_PER_WINDOW = 20;

/** Counts an ignored stanza and logs why, at most DROP_LOGS_PER_WINDOW lines per reason and window. */
export function drop(s: XmppAdapterState, reason: DropReason, detail: string, extra: Record<string, unknown> = {}): void {
  s.dropped[reason]++;
  // Someone writing to the bridge account without a room for it is ordinary, not a warning.
  if (reason === 'no-room') {
    s.log.debug({ reason, detail, ...extra }, 'XMPP stanza ignored');
    return;
  }
  const now = Date.now();
  let w = s.dropLog.get(reason);
  if (!w || now - w.windowStart >= DROP_LOG_WINDOW_MS) {
    if (w && w.suppressed > 0) s.log.warn({ reason, suppressed: w.suppressed }, 'XMPP stanzas ignored (log lines suppressed)');
    w = { windowStart: now, logged: 0, suppressed: 0 };
    s.dropLog.set(reason, w);
  }
  if (w.logged < DROP_LOGS_PER_WINDOW) {
    w.logged++;
    s.log.warn({ reason, detail, ...extra }, 'XMPP stanza ignored');
  } else {
    w.suppressed++;
  }
}

/** Counts what the sink did with an inbound draft. */
export function countResult(s: XmppAdapterState, result: IngestResult): void {
  if (result.status === 'ignored') {
    s.counters.ignored++;
    s.dropped['invalid-event']++;
  } else {
    s.counters[result.status]++;
  }
}

/** In the room, caught up with its archive, and connected: a delivery to it can go now. */
export function roomReady(s: XmppAdapterState, room: MucState | undefined): boolean {
  return room !== undefined && room.joined && room.track.caughtUp && s.connection.online;
}

/** Connected, caught up, and in every linked room — except rooms that banned us (reported in status, not blocking readiness). */
export function isReady(s: XmppAdapterState): boolean {
  if (!s.connection.online || !s.accountTrack.caughtUp) return false;
  for (const room of s.rooms.values()) if (!room.gaveUp && !roomReady(s, room)) return false;
  return true;
}

export function adapterStatus(s: XmppAdapterState): AdapterStatus {
  const c = s.connection.status();
  return {
    connected: c.online,
    ready: isReady(s) && !s.stopping,
    detail: {
      jid: c.jid ?? s.account,
      status: c.status,
      sessions: c.sessions,
      resumptions: c.resumptions,
      reconnectAttempts: c.reconnectAttempts,
      streamManagement: c.smEnabled,
      lastError: c.lastError,
      account: { caughtUp: s.accountTrack.caughtUp, queued: s.accountTrack.pending, archive: s.accountFacts.mam },
      rooms: Object.fromEntries(
        [...s.rooms.values()].map((r) => [
          r.jid,
          { joined: r.joined, ready: roomReady(s, r), nick: r.nick, caughtUp: r.track.caughtUp, queued: r.track.pending, lastSelfPing: r.lastSelfPing, ...(r.gaveUp ? { gaveUp: r.gaveUp } : {}) },
        ]),
      ),
      counters: { ...s.counters },
      dropped: { ...s.dropped },
      encrypted: { ...s.encrypted },
      omemo: omemoStatus(s.omemo, s),
    },
  };
}
