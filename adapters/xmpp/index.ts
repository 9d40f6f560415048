/**
 * The XMPP adapter (docs/protocols.md, "XMPP"; issue 6): the bridge account in MUCs and 1:1.
 *
 * Session (every new session, not a resumption): disco of the account, Carbons
 * on, a MAM catch-up of the account archive from the persisted position, then
 * presence, MUC joins and a MAM catch-up of each room. Each archive is a serial
 * queue (track.ts): the catch-up runs before the live messages that arrived
 * meanwhile, live and archive copies dedupe on the stanza-id, and the position
 * advances only past messages appended in order. MUC self-pings (XEP-0410)
 * notice a silent drop-out; the connection reconnects with jittered backoff.
 *
 * Out: deliver() renders the event (render.ts), sends it with our event id as
 * `id` and `origin-id`, and confirms it — in a MUC by the room's reflection
 * (whose stanza-id becomes a native id of the event), in 1:1 by the XEP-0198 ack.
 *
 * Encrypted messages (issue 26): see encryption.ts.
 *
 * This file only assembles the adapter from its modules, each of which takes
 * the one state object (state.ts); README.md in this folder lists them in the
 * order an inbound message passes through them.
 */
import type { Adapter } from '../../src/core/adapter.js';
import type { RoomLink } from '../../src/core/ports.js';
import { linkOptions } from './config.js';
import { deliver } from './deliver.js';
import { MAX_BODY_XML_BYTES } from './render.js';
import { abort, openConnection, start, stop } from './session.js';
import { XmppAdapterState, type XmppAdapterDeps } from './state.js';
import { adapterStatus } from './status.js';

export { XmppAdapterConfig, parseXmppConfig, linkOptions as validateXmppLink } from './config.js';
export { memoryCatchupStore, stateCatchupStore, type CatchupStore, type CatchupPosition } from './catchup.js';
export { prosodyConfigSnippet } from './prosody-config.js';
// The adapter type's descriptor (config, secrets, links, CLI): the one entry in src/runtime's adapter list.
import { describeXmppAdapter } from './descriptor.js';
export const xmppAdapter = describeXmppAdapter(createXmppAdapter);

export type { XmppAdapterDeps, XmppCounters } from './state.js';

export interface XmppAdapter extends Adapter {
  /** Drops the connection like a crash (no closing stream, no position flush). For tests. */
  abort(): void;
  /** Drops the TCP connection like a network failure; the adapter reconnects and resumes (XEP-0198). For tests. */
  interrupt(): void;
}

export function createXmppAdapter(deps: XmppAdapterDeps): XmppAdapter {
  const s = new XmppAdapterState(deps, openConnection);
  return {
    name: s.name,
    protocol: 'xmpp',
    textFormat: 'xep0393',
    maxBodyBytes: MAX_BODY_XML_BYTES,
    start: () => start(s),
    stop: () => stop(s),
    interrupt: () => s.connection.interrupt(),
    abort: () => abort(s),
    status: () => adapterStatus(s),
    deliver: (event, target, context) => deliver(s, event, target, context),
  };
}

/** For the runtime's admin API: true when the link is a valid XMPP link. */
export function isValidXmppLink(link: RoomLink): boolean {
  try {
    linkOptions(link);
    return true;
  } catch {
    return false;
  }
}
