/**
 * What an occupant's groupchat message asks for (pure): a message (maybe a
 * reply, XEP-0461 with its XEP-0428 fallback stripped), a correction
 * (XEP-0308), a retraction (XEP-0424), reactions (XEP-0444) or a displayed
 * marker (XEP-0333). References stay as the client wrote them; message-in
 * resolves them to event ids.
 */
import type { XmlElement } from './ns.js';

export const NS_IN = {
  correct: 'urn:xmpp:message-correct:0',
  retract: 'urn:xmpp:message-retract:1',
  reactions: 'urn:xmpp:reactions:0',
  reply: 'urn:xmpp:reply:0',
  fallback: 'urn:xmpp:fallback:0',
  markers: 'urn:xmpp:chat-markers:0',
} as const;

export type Action =
  | { readonly kind: 'message'; readonly body: string; readonly replyTo: string | undefined }
  | { readonly kind: 'edit'; readonly body: string; readonly replaces: string }
  | { readonly kind: 'retraction'; readonly redacts: string }
  | { readonly kind: 'reaction'; readonly reactsTo: string; readonly keys: readonly string[] }
  | { readonly kind: 'marker'; readonly upTo: string };

/** undefined: nothing to store (chat states, receipts, empty messages) */
export type Parsed = { readonly ok: true; readonly action: Action } | { readonly ok: false; readonly problem: string } | undefined;

const MAX_REACTIONS = 64;
const MAX_REACTION_CHARS = 64;

/** The body without the reply fallback: `<fallback for=reply><body start end/>` ranges, in code points. */
export function stripReplyFallback(stanza: XmlElement, body: string): string {
  const points = Array.from(body);
  const drop = new Set<number>();
  for (const fb of stanza.getChildren('fallback', NS_IN.fallback)) {
    if (fb.attrs['for'] !== NS_IN.reply) continue;
    for (const range of fb.getChildren('body')) {
      const start = Number(range.attrs['start'] ?? 0);
      const end = Number(range.attrs['end'] ?? points.length);
      if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > points.length || start > end) continue;
      for (let i = start; i < end; i++) drop.add(i);
    }
  }
  return drop.size === 0 ? body : points.filter((_, i) => !drop.has(i)).join('');
}

export function parseAction(stanza: XmlElement): Parsed {
  const body = stanza.getChildText('body') ?? undefined;
  const replace = stanza.getChild('replace', NS_IN.correct);
  if (replace) {
    const id = replace.attrs['id'];
    if (!id) return { ok: false, problem: 'a correction needs the id of the message it corrects' };
    if (body === undefined || body === '') return { ok: false, problem: 'a correction needs a body' };
    return { ok: true, action: { kind: 'edit', body, replaces: id } };
  }
  const retract = stanza.getChild('retract', NS_IN.retract);
  if (retract) {
    const id = retract.attrs['id'];
    return id ? { ok: true, action: { kind: 'retraction', redacts: id } } : { ok: false, problem: 'a retraction needs the id of its message' };
  }
  const reactions = stanza.getChild('reactions', NS_IN.reactions);
  if (reactions) {
    const id = reactions.attrs['id'];
    if (!id) return { ok: false, problem: 'reactions need the id of their message' };
    const keys = [...new Set(reactions.getChildren('reaction').map((r) => r.getText().trim()).filter((k) => k.length > 0))];
    if (keys.length > MAX_REACTIONS || keys.some((k) => k.length > MAX_REACTION_CHARS)) return { ok: false, problem: `at most ${MAX_REACTIONS} reactions of at most ${MAX_REACTION_CHARS} characters` };
    return { ok: true, action: { kind: 'reaction', reactsTo: id, keys } };
  }
  const displayed = stanza.getChild('displayed', NS_IN.markers);
  if (displayed && (body === undefined || body === '')) {
    const id = displayed.attrs['id'];
    return id ? { ok: true, action: { kind: 'marker', upTo: id } } : { ok: false, problem: 'a marker needs an id' };
  }
  if (body === undefined || body === '') return undefined;
  const reply = stanza.getChild('reply', NS_IN.reply);
  const replyTo = reply?.attrs['id'] || undefined;
  return { ok: true, action: { kind: 'message', body: replyTo !== undefined ? stripReplyFallback(stanza, body) : body, replyTo } };
}
