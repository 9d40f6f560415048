/**
 * Where every inbound stanza enters the adapter (the connection's `onStanza`):
 * one switch by stanza kind. Messages — chat, groupchat, carbons, archive
 * results, and in them corrections, retractions, reactions, markers, receipts
 * and error messages — go to message.ts; MUC presence (join answers, nick
 * changes, kicks and bans, presence errors) to presence.ts. iq requests to us
 * (disco#info, ping) are answered by the connection itself (client.ts), iq
 * replies by the request that sent them.
 */
import type { XmppAdapterState } from '../state.js';
import type { XmlElement } from '../xml.js';
import { onMessage } from './message.js';
import { onPresence } from './presence.js';

export function onStanza(s: XmppAdapterState, stanza: XmlElement): void {
  if (stanza.is('message')) onMessage(s, stanza);
  else if (stanza.is('presence')) onPresence(s, stanza);
}
