// One entry point for the XMPP tests that run the same cases on both servers.
import { startEjabberd } from './ejabberd.js';
import { startProsody, type XmppServer } from './prosody.js';

export type { XmppServer } from './prosody.js';
export type XmppServerKind = XmppServer['kind'];

/** The servers every parameterised XMPP integration file runs against. */
export const XMPP_SERVERS: readonly XmppServerKind[] = ['prosody', 'ejabberd'];

export interface XmppServerOptions {
  logLevel?: 'debug' | 'info';
  /** Prosody only: lock new rooms until configured (ejabberd never locks a new room). */
  roomLocking?: boolean;
  /** Archive new rooms by default (default true); false: only when their configuration turns it on. */
  mucArchiveByDefault?: boolean;
}

export function startXmppServer(kind: XmppServerKind, opts: XmppServerOptions = {}): Promise<XmppServer> {
  return kind === 'ejabberd' ? startEjabberd({ ...(opts.logLevel ? { logLevel: opts.logLevel } : {}), ...(opts.mucArchiveByDefault !== undefined ? { mucArchiveByDefault: opts.mucArchiveByDefault } : {}) }) : startProsody(opts);
}
