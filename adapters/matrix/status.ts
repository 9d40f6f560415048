/**
 * The adapter's status (GET /v1/admin/status, /readyz detail, metrics):
 * reachable, receiving (the listener up, or the /sync loop not failing),
 * every linked room joined; and the counters of each part — listener or
 * /sync, inbound, outbound, HTTP.
 */
import type { AdapterStatus } from '../../src/core/adapter.js';
import { cryptoStatus } from './crypto/session.js';
import { clearRoomRefusal, refusesClearRoom } from './rooms.js';
import type { MatrixAdapterState } from './state.js';

export function listenAddress(s: MatrixAdapterState): { host: string; port: number } | undefined {
  const a = s.server?.address();
  return a ? { host: a.address, port: a.port } : undefined;
}

export function status(s: MatrixAdapterState): AdapterStatus {
  const { session, rooms } = s;
  const linked = s.deps.links.linksOf(s.name).map((l) => l.link.target);
  const unjoined = linked.filter((r) => !rooms.joined.has(r));
  const reachable = session.connected && !s.http.unreachable;
  const receiving = s.mode === 'appservice' ? (s.server?.listening ?? false) : session.sync !== undefined && !session.sync.failing;
  return {
    connected: reachable,
    ready: reachable && receiving && unjoined.length === 0,
    detail: {
      mode: s.mode,
      userId: s.userId,
      homeserverReachable: reachable,
      ...(s.http.lastError !== undefined ? { lastError: s.http.lastError } : {}),
      linkedRooms: linked.length,
      joinedRooms: linked.length - unjoined.length,
      unjoinedRooms: unjoined.slice(0, 20).map((r) => ({ roomId: r, reason: rooms.joinProblems.get(r) ?? 'not joined yet' })),
      // Linked rooms that are end-to-end encrypted: bridged while `encryption.active`, else nothing to or from them.
      encryptedRooms: linked.filter((r) => rooms.encrypted.has(r)).slice(0, 20),
      encryptedLinkedRooms: linked.filter((r) => rooms.encrypted.has(r)).length,
      encryption: cryptoStatus(s),
      // encryption.mode: required — joined linked rooms in clear: nothing bridged to or from them.
      refusedRooms: linked
        .filter((r) => rooms.joined.has(r) && refusesClearRoom(s, r))
        .slice(0, 20)
        .map((r) => ({ roomId: r, code: 'SG_ERR_ROOM_NOT_ENCRYPTED', reason: clearRoomRefusal(r) })),
      ...(session.pingResult ? { ping: { ...session.pingResult } } : {}),
      ...(s.server ? { listener: listenAddress(s), lastTransactionAt: s.server.lastTransactionAt, transactions: { ...s.server.counters } } : {}),
      ...(session.sync ? { lastSyncAt: session.sync.lastSyncAt, sync: { ...session.sync.counters } } : {}),
      inbound: { ...s.inbound.counters, dropped: { ...s.inbound.counters.dropped }, changed: { ...s.inbound.counters.changed }, undecryptable: { ...s.inbound.counters.undecryptable } },
      outbound: { ...s.outbound.counters },
      http: { ...s.http.counters },
    },
  };
}
