/**
 * `xmpp-rooms`: syncgate as an XMPP component (XEP-0114) hosting rooms
 * whose archive is the log. Each gateway room linked to this adapter is
 * `<target>@<domain>`; occupants' messages are appended first and reflected
 * after, with our event id as stanza-id; MAM on the room JID pages the room
 * timeline; every other endpoint's event reaches every occupant resource.
 *
 * Modules: config (schema, link rule), session (connection, backoff),
 * dispatch (stanza → handler), presence + history (join/leave), message-in
 * (append then reflect), mam (archive), disco, outbound (fan-out, deliver),
 * render (event → stanza), state (occupants, rooms, counters), status.
 */
import type { Adapter } from '../../src/core/adapter.js';
import type { RoomsContext, XmppRoomsDeps } from './context.js';
import { installDispatch } from './dispatch.js';
import { deliverEvent } from './outbound.js';
import { ComponentSession } from './session.js';
import { componentStatus } from './status.js';
import { createState, syncRooms } from './state.js';

export { parseXmppRoomsConfig, validateRoomsLink, type XmppRoomsConfig } from './config.js';
export type { GrantLookup, RoomArchive, XmppRoomsDeps } from './context.js';

export interface XmppRoomsAdapter extends Adapter {
  /** drops the connection like a crash: no closing stream, no reconnect (tests) */
  abort(): void;
}

export function createXmppRoomsAdapter(deps: XmppRoomsDeps): XmppRoomsAdapter {
  const { config, log, links, name } = deps;
  const state = createState();
  let session: ComponentSession | undefined;
  let unwatch: (() => void) | undefined;

  const ctx: RoomsContext = {
    ...deps,
    state,
    send: async (stanza) => {
      if (!session) throw new Error('the component is not started');
      await session.send(stanza);
    },
    flush: async () => {
      if (!session) throw new Error('the component is not started');
      await session.flush(config.streamTimeoutMs);
    },
  };

  const refreshRooms = () => {
    const shadowed = syncRooms(
      state,
      config.domain,
      links.linksOf(name).map(({ room, link }) => ({ room, target: link.target, name: typeof link.options?.['name'] === 'string' ? link.options['name'] : undefined })),
    );
    if (shadowed.length > 0) log.warn({ rooms: shadowed }, 'these rooms link a room JID another room already links: they are not hosted');
  };

  const waitOnline = async (s: ComponentSession, timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!s.online && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  };

  return {
    name,
    protocol: 'xmpp',
    textFormat: 'xep0393',

    async start() {
      refreshRooms();
      unwatch = links.onChange(refreshRooms);
      // A new session starts with nobody in the rooms: clients learn it from a refused message or a self-ping and rejoin.
      for (const room of state.rooms.values()) room.occupants.clear();
      const s = new ComponentSession(config, log, () => undefined);
      session = s;
      installDispatch(s.xmpp, ctx);
      s.start();
      await waitOnline(s, config.startTimeoutMs);
      if (!s.online) log.warn({ domain: config.domain }, 'XMPP component not connected yet; it keeps trying');
    },

    async stop() {
      unwatch?.();
      unwatch = undefined;
      await session?.stop(config.streamTimeoutMs);
    },

    status() {
      return componentStatus(config.domain, session?.status() ?? { online: false, status: 'offline', sessions: 0, reconnectAttempts: 0, lastError: undefined }, state);
    },

    deliver(event, target, context) {
      return deliverEvent(ctx, session?.online ?? false, event, target, context);
    },

    abort() {
      session?.abort();
    },
  };
}

// The adapter type's descriptor (config, secrets, links, CLI): the one entry in src/runtime's adapter list.
import { describeXmppRoomsAdapter } from './descriptor.js';
export const xmppRoomsAdapter = describeXmppRoomsAdapter(createXmppRoomsAdapter);
