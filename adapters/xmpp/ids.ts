/**
 * Native ids of XMPP messages as they go into `origin.ids` (and so into the
 * id map, as `nativeKey('xmpp', name, value)`), and idempotency keys.
 *
 * The `id` attribute and `<origin-id>` are chosen by the sender, so two
 * senders can use the same value. Their values are scoped to the conversation
 * and the sender:
 *
 *   xmpp.id / xmpp.originId = <conversation bare JID>/<sender key>/<raw id>
 *   xmpp.stanzaId           = <by bare JID>/<raw stanza-id>
 *   xmpp.stanzaIdBy         = <by bare JID>
 *   xmpp.occupantId         = <raw occupant-id>           (MUC, when the room offers it)
 *
 * The conversation is the MUC's or the 1:1 peer's bare JID (a gateway room may
 * link several); the sender key is the sender's bare JID in 1:1, and in a MUC
 * `o:<occupant-id>` when the room offers XEP-0421, else `n:<nick>`. Bare JIDs
 * contain no '/', and sender keys are escaped ('%' → %25, '/' → %2F), so the
 * raw id is everything after the second '/' (after the first for stanza-ids).
 * Stanza-ids are scoped by their archive because two archives (two MUCs, or
 * a MUC and our account) can hand out the same value.
 */
import { nativeKey } from '../../src/core/adapter.js';

export const ID = 'xmpp.id';
export const ORIGIN_ID = 'xmpp.originId';
export const STANZA_ID = 'xmpp.stanzaId';
export const STANZA_ID_BY = 'xmpp.stanzaIdBy';
export const OCCUPANT_ID = 'xmpp.occupantId';

export function escapeKey(key: string): string {
  return key.replace(/%/g, '%25').replace(/\//g, '%2F');
}

/** The scope of a sender's ids within a conversation. */
export function senderScope(conversation: string, senderKey: string): string {
  return `${conversation}/${escapeKey(senderKey)}`;
}

export function scopedId(scope: string, raw: string): string {
  return `${scope}/${raw}`;
}

export function scopedStanzaId(by: string, raw: string): string {
  return `${by}/${raw}`;
}

/** The raw id from a scoped `xmpp.id` / `xmpp.originId` value. */
export function rawId(scoped: string | undefined): string | undefined {
  if (scoped === undefined) return undefined;
  const first = scoped.indexOf('/');
  const second = first < 0 ? -1 : scoped.indexOf('/', first + 1);
  return second < 0 ? undefined : scoped.slice(second + 1);
}

/** The raw stanza-id from a scoped `xmpp.stanzaId` value. */
export function rawStanzaId(scoped: string | undefined): string | undefined {
  if (scoped === undefined) return undefined;
  const i = scoped.indexOf('/');
  return i < 0 ? undefined : scoped.slice(i + 1);
}

/** The id-map lookup key of a native id. */
export function lookupKey(name: string, value: string): string {
  return nativeKey('xmpp', name, value);
}

/** Lookup keys for a sender-chosen id in the given scopes, `id` and `origin-id` alike, in order. */
export function senderIdKeys(scopes: readonly string[], raw: string): string[] {
  return scopes.flatMap((scope) => [lookupKey(ORIGIN_ID, scopedId(scope, raw)), lookupKey(ID, scopedId(scope, raw))]);
}

export function stanzaIdKey(by: string, raw: string): string {
  return lookupKey(STANZA_ID, scopedStanzaId(by, raw));
}

/** docs/protocols.md, "Native ids and idempotency" */
export const idem = {
  muc: (room: string, stanzaId: string) => `xmpp:muc:${room}:${stanzaId}`,
  archive: (account: string, stanzaId: string) => `xmpp:arch:${account}:${stanzaId}`,
  origin: (scope: string, id: string) => `xmpp:oid:${scope}:${id}`,
};
