/** The component's report for GET /v1/admin/status (adapter detail). */
import type { AdapterStatus } from '../../src/core/adapter.js';
import type { SessionStatus } from './session.js';
import type { ComponentState } from './state.js';

export function componentStatus(domain: string, session: SessionStatus, state: ComponentState): AdapterStatus {
  const rooms = [...state.rooms.values()].map((r) => ({
    room: r.room,
    jid: r.jid,
    occupants: r.occupants.size,
    resources: [...r.occupants.values()].reduce((n, o) => n + o.sessions.size, 0),
  }));
  return {
    connected: session.online,
    ready: session.online,
    detail: {
      domain,
      status: session.status,
      sessions: session.sessions,
      reconnectAttempts: session.reconnectAttempts,
      ...(session.lastError !== undefined ? { lastError: session.lastError } : {}),
      rooms,
      counters: { ...state.counters },
      refusals: { ...state.refusals },
    },
  };
}
