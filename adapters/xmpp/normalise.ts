/**
 * XMPP stanzas → event drafts. Pure: everything the normaliser needs to know
 * about the session comes in `NormaliseContext`; references to other messages
 * come out as id-map lookup keys that the adapter resolves against the log
 * (`toDraft` then builds the draft from the resolved event ids).
 *
 * Covers chat and groupchat messages, XEP-0308 corrections, XEP-0424
 * retractions (v1, and v0 via fastening), XEP-0444 reactions, XEP-0461
 * replies (XEP-0428 fallback stripped, offsets in code points), XEP-0333
 * markers, XEP-0184 receipts, XEP-0066 OOB attachments, XEP-0393 styling and
 * XEP-0203 delay. Carbons and archive results are unwrapped by
 * `openEnvelope`, which also rejects the spoofed ones.
 *
 * Encrypted messages (OMEMO 0.3 and 2, OpenPGP XEP-0373 and XEP-0027, OTR,
 * any XEP-0380 marker) are never read as their fallback body: they become a
 * message whose body is the neutral notice and whose content is marked
 * `undecryptable` (`encryptionOf`). Live, carbon and archive copies all come
 * through `normaliseMessage`, so the rule holds for each.
 */
import { createHash } from 'node:crypto';
import { ECHO_ID_KEY } from '../../src/core/adapter.js';
import { UNDECRYPTABLE_NOTICE, type Attachment, type Content, type EventDraft, type Sender, type Undecryptable, type UndecryptableReason } from '../../src/core/event.js';
import { truncateMarked } from '../../src/core/text.js';
import type { DropReason } from './errors.js';
import {
  ID,
  OCCUPANT_ID,
  ORIGIN_ID,
  STANZA_ID,
  STANZA_ID_BY,
  idem,
  scopedId,
  scopedStanzaId,
  senderIdKeys,
  senderScope,
  stanzaIdKey,
} from './ids.js';
import { codePointLength, stripFallback, type CodePointRange } from '../../src/core/codepoints.js';
import { hasStyling } from './text.js';
import { NS, hasInvalidXmlChars, type XmlElement } from './xml.js';

/** What the normaliser knows about one MUC we are in. */
export interface RoomFacts {
  /** our nick in the room */
  readonly nick: string;
  /** our XEP-0421 occupant id, from our self-presence */
  readonly occupantId?: string | undefined;
  /** the room advertises urn:xmpp:sid:0: its stanza-ids can be trusted (XEP-0359 §6) */
  readonly stanzaIds: boolean;
  /** the room advertises urn:xmpp:occupant-id:0: occupant ids can be trusted (XEP-0421 §6) */
  readonly occupantIds: boolean;
  /** without occupant ids: the nick an occupant's sender key stays on across its nick changes (default: the nick itself) */
  readonly nickKey?: (nick: string) => string;
}

export interface NormaliseContext {
  /** our account, bare and lower case */
  readonly account: string;
  readonly now: number;
  /** our account's server advertises urn:xmpp:sid:0 on the account */
  readonly accountStanzaIds: boolean;
  /** facts about a MUC we are (or were) in; undefined for rooms we know nothing about */
  room(room: string): RoomFacts | undefined;
  readonly maxBodyChars: number;
}

export type Rejected = { readonly ok: false; readonly reason: DropReason; readonly detail: string };
/** Not a chat event (chat states, subjects, errors, …): nothing to do, nothing to count. */
export type Skipped = { readonly ok: 'skip'; readonly detail: string };

/** Where a message came from. */
export type Source =
  | { readonly kind: 'live'; readonly carbon?: 'sent' | 'received' }
  | { readonly kind: 'archive'; readonly archive: string; readonly resultId: string; readonly stamp?: number | undefined };

export type Envelope =
  | { readonly ok: true; readonly type: 'message'; readonly message: XmlElement; readonly source: Source }
  | {
      readonly ok: true;
      readonly type: 'archive-result';
      readonly queryId: string;
      /** bare JID of the archive the result claims to come from (our account when absent) */
      readonly from: string;
      readonly resultId: string;
      readonly message: XmlElement;
      readonly stamp: number | undefined;
    };

/** A lookup reference to another message: id-map keys to try in order. */
export interface Ref {
  readonly keys: readonly string[];
  /** the target must have been sent by the same sender (XEP-0308 §4, XEP-0424 §5) */
  readonly sameSender: boolean;
}

export type Action =
  | { readonly kind: 'message'; readonly content: Content; readonly replyTo?: Ref }
  | { readonly kind: 'edit'; readonly content: Content; readonly replaces: Ref }
  | { readonly kind: 'retraction'; readonly redacts: Ref }
  | { readonly kind: 'reaction'; readonly reactsTo: Ref; readonly keys: readonly string[] }
  | { readonly kind: 'marker'; readonly upTo: Ref }
  | { readonly kind: 'receipt'; readonly upTo: Ref };

export interface Parsed {
  readonly chat: 'groupchat' | 'chat';
  /** the MUC or the 1:1 peer (bare JID): what room links name */
  readonly conversation: string;
  readonly sender: Sender;
  /** sent by our account (our occupant in a MUC, a sent carbon, an outgoing archived message) */
  readonly fromUs: boolean;
  /** our event id, when the message is ours and carries one (origin-id, else id) */
  readonly echoOf: string | undefined;
  readonly ids: Readonly<Record<string, string>>;
  readonly idem: string;
  /** the archive entry this is (stanza-id by the archive we catch up from) */
  readonly archived: { readonly archive: string; readonly id: string } | undefined;
  readonly ts: { readonly origin?: number; readonly received: number };
  readonly historical: boolean;
  readonly action: Action;
  /** XEP-0184: the sender asked for a receipt, with this id (1:1 only) */
  readonly receiptFor: string | undefined;
  /** the raw `id` attribute (for receipts and matching our reflections) */
  readonly stanzaAttrId: string | undefined;
  /** the message was end-to-end encrypted (and is bridged as the undecryptable notice) */
  readonly encrypted: Undecryptable | undefined;
}

export type Normalised = { readonly ok: true; readonly value: Parsed } | Rejected | Skipped;

const reject = (reason: DropReason, detail: string): Rejected => ({ ok: false, reason, detail });
const skip = (detail: string): Skipped => ({ ok: 'skip', detail });

// --- JIDs (just enough: bare part lower-cased, resource kept as is)

export function bareJid(address: string | undefined): string | undefined {
  if (address === undefined || address === '') return undefined;
  const slash = address.indexOf('/');
  const bare = (slash < 0 ? address : address.slice(0, slash)).toLowerCase();
  return bare === '' ? undefined : bare;
}

export function resourceOf(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  const slash = address.indexOf('/');
  return slash < 0 ? undefined : address.slice(slash + 1);
}

function parseStamp(stamp: string | undefined): number | undefined {
  if (stamp === undefined) return undefined;
  const ms = Date.parse(stamp);
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

/** XEP-0203 delay on an element, in ms. */
export function delayStamp(el: XmlElement): number | undefined {
  return parseStamp(el.getChild('delay', NS.delay)?.attrs['stamp']);
}

/**
 * Unwraps carbons (XEP-0280) and recognises archive results (XEP-0313).
 * Carbons must come from our own bare JID; anything else is a spoof.
 */
export function openEnvelope(stanza: XmlElement, account: string): Envelope | Rejected | Skipped {
  if (!stanza.is('message')) return skip(`not a message: ${stanza.name}`);
  const from = bareJid(stanza.attrs['from']) ?? account;

  const result = stanza.getChild('result', NS.mam);
  if (result) {
    const queryId = result.attrs['queryid'];
    const resultId = result.attrs['id'];
    const forwarded = result.getChild('forwarded', NS.forward);
    const message = forwarded?.getChild('message');
    if (queryId === undefined || resultId === undefined || !forwarded || !message) return reject('archive-stranger', 'an archive result without queryid, id or forwarded message');
    return { ok: true, type: 'archive-result', queryId, from, resultId, message, stamp: delayStamp(forwarded) };
  }

  for (const direction of ['sent', 'received'] as const) {
    const carbon = stanza.getChild(direction, NS.carbons);
    if (!carbon) continue;
    if (from !== account) return reject('spoofed-carbon', `a ${direction} carbon from ${from}`);
    const message = carbon.getChild('forwarded', NS.forward)?.getChild('message');
    if (!message) return reject('invalid-stanza', `a ${direction} carbon without a forwarded message`);
    return { ok: true, type: 'message', message, source: { kind: 'live', carbon: direction } };
  }
  return { ok: true, type: 'message', message: stanza, source: { kind: 'live' } };
}

/** Keeps a value within a schema limit: over-long values are cut and made unique with a hash. */
function fit(value: string, max: number): string {
  if (value.length <= max) return value;
  const hash = createHash('sha256').update(value).digest('hex').slice(0, 16);
  return `${value.slice(0, max - 17)}~${hash}`;
}

const MAX_ID_VALUE = 1024;

interface Who {
  readonly chat: 'groupchat' | 'chat';
  readonly conversation: string;
  readonly sender: Sender;
  /** scope of the sender's own ids */
  readonly scope: string;
  /** scope of the other party's ids (1:1 only) */
  readonly otherScope: string | undefined;
  readonly fromUs: boolean;
  readonly stanzaId: { readonly by: string; readonly id: string } | undefined;
  readonly occupantId: string | undefined;
}

function groupchatSender(message: XmlElement, source: Source, ctx: NormaliseContext): Who | Rejected | Skipped {
  const fromAttr = message.attrs['from'];
  const room = bareJid(fromAttr);
  const nick = resourceOf(fromAttr);
  if (room === undefined) return reject('invalid-stanza', 'a groupchat message without from');
  if (nick === undefined || nick === '') return skip('a message from the room itself');
  if (source.kind === 'live' && source.carbon) return skip('a carbon of a groupchat message');
  if (source.kind === 'archive' && source.archive !== room) return reject('archive-stranger', `a groupchat message from ${room} in the archive of ${source.archive}`);
  const facts = ctx.room(room);
  const occupantIdRaw = message.getChild('occupant-id', NS.occupantId)?.attrs['id'];
  const occupantId = facts?.occupantIds && occupantIdRaw ? occupantIdRaw : undefined;
  const key = occupantId !== undefined ? `o:${occupantId}` : `n:${facts?.nickKey?.(nick) ?? nick}`;
  const scope = senderScope(room, key);
  const fromUs = facts !== undefined && (occupantId !== undefined && facts.occupantId !== undefined ? occupantId === facts.occupantId : nick === facts.nick);

  let stanzaId: Who['stanzaId'];
  if (source.kind === 'archive') stanzaId = { by: room, id: source.resultId };
  else if (facts?.stanzaIds) {
    const sid = message.getChildren('stanza-id', NS.sid).find((s) => bareJid(s.attrs['by']) === room)?.attrs['id'];
    if (sid) stanzaId = { by: room, id: sid };
  }
  return {
    chat: 'groupchat',
    conversation: room,
    sender: {
      uid: fit(`xmpp:${scope}`, 256),
      proto: 'xmpp',
      native: fit(`${room}/${nick}`, 512),
      display: fit(nick, 256),
      auth: occupantId !== undefined ? 'occupant-id' : 'claimed',
    },
    scope,
    otherScope: undefined,
    fromUs,
    stanzaId,
    occupantId,
  };
}

function chatSender(message: XmlElement, source: Source, ctx: NormaliseContext): Who | Rejected | Skipped {
  const account = ctx.account;
  const from = bareJid(message.attrs['from']) ?? account;
  const to = bareJid(message.attrs['to']) ?? account;
  let outgoing: boolean;
  if (source.kind === 'archive') {
    if (source.archive !== account) return reject('archive-stranger', `a chat message in the archive of ${source.archive}`);
    outgoing = from === account;
  } else if (source.carbon === 'sent') {
    if (from !== account) return reject('spoofed-carbon', `a sent carbon of a message from ${from}`);
    outgoing = true;
  } else {
    if (source.carbon === 'received' && to !== account) return reject('spoofed-carbon', `a received carbon of a message to ${to}`);
    outgoing = false;
  }
  const peer = outgoing ? to : from;
  if (peer === account) return skip('a message between our own resources');
  const senderBare = outgoing ? account : peer;
  const nick = message.getChildText('nick', NS.nick)?.trim();
  const display = nick || senderBare.slice(0, Math.max(0, senderBare.indexOf('@'))) || senderBare;

  let stanzaId: Who['stanzaId'];
  if (source.kind === 'archive') stanzaId = { by: account, id: source.resultId };
  else if (ctx.accountStanzaIds) {
    const sid = message.getChildren('stanza-id', NS.sid).find((s) => bareJid(s.attrs['by']) === account)?.attrs['id'];
    if (sid) stanzaId = { by: account, id: sid };
  }
  return {
    chat: 'chat',
    conversation: peer,
    sender: { uid: fit(`xmpp:${senderBare}`, 256), proto: 'xmpp', native: fit(senderBare, 512), display: fit(display, 256), auth: 'server' },
    scope: senderScope(peer, senderBare),
    otherScope: senderScope(peer, outgoing ? peer : account),
    fromUs: outgoing,
    stanzaId,
    occupantId: undefined,
  };
}

/** The ranges of fallbacks for `forNs` (XEP-0428): `<body start end/>` children, or the whole body when there is none. */
function fallbackRanges(message: XmlElement, forNs: string): CodePointRange[] {
  const ranges: CodePointRange[] = [];
  for (const fb of message.getChildren('fallback', NS.fallback)) {
    if (fb.attrs['for'] !== forNs) continue;
    const bodies = fb.getChildren('body');
    if (bodies.length === 0) {
      if (fb.getChildren('subject').length === 0) ranges.push({});
      continue;
    }
    for (const b of bodies) {
      const start = b.attrs['start'] === undefined ? undefined : Number(b.attrs['start']);
      const end = b.attrs['end'] === undefined ? undefined : Number(b.attrs['end']);
      ranges.push({ ...(start !== undefined && Number.isFinite(start) ? { start } : {}), ...(end !== undefined && Number.isFinite(end) ? { end } : {}) });
    }
  }
  return ranges;
}

function bodyOf(message: XmlElement): string | undefined {
  const bodies = message.getChildren('body').filter((b) => b.getNS() === NS.client || b.getNS() === undefined || b.getNS() === '');
  const plain = bodies.find((b) => b.attrs['xml:lang'] === undefined) ?? bodies[0];
  return plain?.getText();
}

const LINK_SCHEME = /^https?:\/\//i;

function attachmentsOf(message: XmlElement): Attachment[] {
  const out: Attachment[] = [];
  for (const x of message.getChildren('x', NS.oob)) {
    const url = x.getChildText('url')?.trim();
    if (!url || url.length > 4096 || !LINK_SCHEME.test(url) || hasInvalidXmlChars(url)) continue;
    const desc = x.getChildText('desc')?.trim();
    out.push({ url, ...(desc ? { name: fit(desc, 1024) } : {}) });
    if (out.length >= 20) break;
  }
  return out;
}

function contentOf(whole: string, message: XmlElement, ctx: NormaliseContext): Content | Rejected {
  if (hasInvalidXmlChars(whole)) return reject('invalid-characters', 'the body has characters XML does not allow');
  // The size rule (README "Message size"): a body the log cannot hold is cut with a visible marker, never dropped.
  const text = truncateMarked(whole, ctx.maxBodyChars);
  const attachments = attachmentsOf(message);
  const styled = !message.getChild('unstyled', NS.styling) && hasStyling(text);
  return {
    body: text,
    ...(styled ? { format: 'xep0393' as const, formatted: text } : {}),
    ...(attachments.length > 0 ? { attachments } : {}),
  };
}

/** XEP-0380 namespaces → our reason. */
const EME_REASONS: Readonly<Record<string, UndecryptableReason>> = {
  [NS.omemoLegacy]: 'omemo',
  'urn:xmpp:omemo:0': 'omemo',
  [NS.omemo1]: 'omemo2',
  [NS.omemo2]: 'omemo2',
  [NS.openpgp]: 'openpgp',
  [NS.pgpLegacy]: 'openpgp-legacy',
  [NS.otr]: 'otr',
};

/**
 * The encryption a message carries, or 'key-transport' for an OMEMO message
 * without a payload (a session set-up or ratchet step: nothing a person
 * wrote), or undefined for a message in clear.
 */
export function encryptionOf(message: XmlElement): Undecryptable | 'key-transport' | undefined {
  for (const [ns, reason] of [
    [NS.omemoLegacy, 'omemo'],
    [NS.omemo2, 'omemo2'],
    [NS.omemo1, 'omemo2'],
  ] as const) {
    const encrypted = message.getChild('encrypted', ns);
    if (encrypted) return encrypted.getChild('payload') ? { reason, scheme: ns } : 'key-transport';
  }
  if (message.getChild('openpgp', NS.openpgp)) return { reason: 'openpgp', scheme: NS.openpgp };
  if (message.getChild('x', NS.pgpLegacy)) return { reason: 'openpgp-legacy', scheme: NS.pgpLegacy };
  // OTR lives in the body itself: data, query and error messages all start so.
  if (bodyOf(message)?.startsWith('?OTR')) return { reason: 'otr', scheme: NS.otr };
  const eme = message.getChild('encryption', NS.eme);
  if (eme) {
    const ns = eme.attrs['namespace'];
    const reason = ns !== undefined ? EME_REASONS[ns] : undefined;
    return { reason: reason ?? 'unknown-encryption', ...(ns ? { scheme: fit(ns, 256) } : {}) };
  }
  return undefined;
}

function reactionKeys(el: XmlElement): string[] | Rejected {
  const keys: string[] = [];
  for (const r of el.getChildren('reaction')) {
    const key = r.getText().trim();
    if (key === '') continue;
    if (key.length > 64 || hasInvalidXmlChars(key)) return reject('invalid-stanza', 'a reaction longer than 64 characters');
    if (!keys.includes(key)) keys.push(key);
  }
  if (keys.length > 64) return reject('invalid-stanza', `${keys.length} reactions from one sender`);
  return keys;
}

/** How a message names other messages: the id-map keys to try for an id, in this conversation. */
interface Refs {
  readonly muc: boolean;
  /** the sender's own scope */
  readonly own: readonly string[];
  /** the other party's scope, then the sender's (1:1) */
  readonly otherThenOwn: readonly string[];
  /** In a MUC, XEP-0424/0444/0461/0333 reference the room's stanza-id; in 1:1 the origin-id or id. */
  byRoom(id: string, fallbackScopes: readonly string[]): Ref;
}

function refsFor(who: Who): Refs {
  const muc = who.chat === 'groupchat';
  const own = [who.scope];
  return {
    muc,
    own,
    otherThenOwn: who.otherScope ? [who.otherScope, who.scope] : own,
    byRoom: (id, fallbackScopes) => ({ keys: [...(muc ? [stanzaIdKey(who.conversation, id)] : []), ...senderIdKeys(fallbackScopes, id)], sameSender: false }),
  };
}

/** Reads one kind of message; undefined when the message is not of that kind. */
type ActionReader = (message: XmlElement, who: Who, refs: Refs, ctx: NormaliseContext) => Action | Rejected | Skipped | undefined;

/** XEP-0424 retraction (v1, and v0 via fastening): only of the retractor's own messages. */
const retraction: ActionReader = (message, who, refs) => {
  const retract = message.getChild('retract', NS.retract);
  const fastened = message.getChild('apply-to', NS.fasten);
  const retractId = retract?.attrs['id'] ?? (fastened?.getChild('retract', NS.retract0) ? fastened.attrs['id'] : undefined);
  if (!retract && !fastened?.getChild('retract', NS.retract0)) return undefined;
  if (!retractId) return reject('invalid-stanza', 'a retraction without an id');
  // Older clients name the origin-id in a MUC too; both ways lead only to the retractor's own messages.
  return { kind: 'retraction', redacts: { keys: [...(refs.muc ? [stanzaIdKey(who.conversation, retractId)] : []), ...senderIdKeys(refs.own, retractId)], sameSender: true } };
};

/** XEP-0444 reactions: the sender's whole set on the target. */
const reaction: ActionReader = (message, _who, refs) => {
  const reactions = message.getChild('reactions', NS.reactions);
  if (!reactions) return undefined;
  const id = reactions.attrs['id'];
  if (!id) return reject('invalid-stanza', 'reactions without an id');
  const keys = reactionKeys(reactions);
  if (!Array.isArray(keys)) return keys;
  return { kind: 'reaction', reactsTo: refs.byRoom(id, refs.muc ? [] : refs.otherThenOwn), keys };
};

/** An encrypted message or correction: never the fallback body, the neutral notice, marked with why. */
const encrypted: ActionReader = (message, _who, refs) => {
  const encryption = encryptionOf(message);
  if (encryption === undefined) return undefined;
  if (encryption === 'key-transport') return skip('an OMEMO key transport message (no payload)');
  const content: Content = { body: UNDECRYPTABLE_NOTICE, undecryptable: encryption };
  const replaceId = message.getChild('replace', NS.correct)?.attrs['id'];
  if (replaceId) return { kind: 'edit', content, replaces: { keys: senderIdKeys(refs.own, replaceId), sameSender: true } };
  return { kind: 'message', content };
};

/** XEP-0308 correction: only of the sender's own messages. */
const correction: ActionReader = (message, _who, refs, ctx) => {
  const replace = message.getChild('replace', NS.correct);
  const text = bodyOf(message);
  if (!replace || text === undefined) return undefined;
  const id = replace.attrs['id'];
  if (!id) return reject('invalid-stanza', 'a correction without an id');
  const content = contentOf(text, message, ctx);
  if ('ok' in content) return content;
  return { kind: 'edit', content, replaces: { keys: senderIdKeys(refs.own, id), sameSender: true } };
};

/** A message with a body, perhaps an XEP-0461 reply (its fallback quote stripped). */
const chatMessage: ActionReader = (message, who, refs, ctx) => {
  const text = bodyOf(message);
  if (text === undefined) return undefined;
  const reply = message.getChild('reply', NS.reply);
  const replyId = reply?.attrs['id'];
  const stripped = reply ? stripFallback(text, fallbackRanges(message, NS.reply)) : text;
  const content = contentOf(stripped, message, ctx);
  if ('ok' in content) return content;
  let replyTo: Ref | undefined;
  if (replyId) {
    // In 1:1, `to` names the author of the message replied to, when the client says.
    const toBare = bareJid(reply?.attrs['to']);
    const scopes = refs.muc ? [] : toBare === who.sender.native ? refs.own : toBare !== undefined && who.otherScope && toBare === (who.fromUs ? who.conversation : ctx.account) ? [who.otherScope] : refs.otherThenOwn;
    replyTo = refs.byRoom(replyId, scopes);
  }
  return { kind: 'message', content, ...(replyTo ? { replyTo } : {}) };
};

/** XEP-0333 displayed marker. */
const marker: ActionReader = (message, _who, refs) => {
  const displayed = message.getChild('displayed', NS.markers)?.attrs['id'];
  return displayed ? { kind: 'marker', upTo: refs.byRoom(displayed, refs.muc ? [] : refs.otherThenOwn) } : undefined;
};

/** XEP-0184 receipt (or an XEP-0333 received marker), 1:1 only. */
const receipt: ActionReader = (message, _who, refs) => {
  const received = message.getChild('received', NS.receipts)?.attrs['id'] ?? message.getChild('received', NS.markers)?.attrs['id'];
  return received && !refs.muc ? { kind: 'receipt', upTo: { keys: senderIdKeys(refs.otherThenOwn, received), sameSender: false } } : undefined;
};

/** One reader per kind, in the order they take precedence: a message is of the first kind that recognises it. */
const ACTION_READERS: readonly ActionReader[] = [retraction, reaction, encrypted, correction, chatMessage, marker, receipt];

function action(message: XmlElement, who: Who, ctx: NormaliseContext): Action | Rejected | Skipped {
  const refs = refsFor(who);
  for (const read of ACTION_READERS) {
    const act = read(message, who, refs, ctx);
    if (act !== undefined) return act;
  }
  return skip('no body and nothing we bridge (chat state, subject, …)');
}

/** Normalises one (unwrapped) message. */
export function normaliseMessage(message: XmlElement, source: Source, ctx: NormaliseContext): Normalised {
  const type = message.attrs['type'] ?? 'normal';
  if (type === 'error') return skip('an error message');
  if (type === 'headline') return skip('a headline');
  const who = type === 'groupchat' ? groupchatSender(message, source, ctx) : chatSender(message, source, ctx);
  if ('ok' in who) return who;

  const act = action(message, who, ctx);
  if ('ok' in act) return act;

  const id = message.attrs['id'] || undefined;
  const originId = message.getChild('origin-id', NS.sid)?.attrs['id'] || undefined;
  const ids: Record<string, string> = {};
  const put = (name: string, value: string | undefined) => {
    if (value !== undefined && value.length <= MAX_ID_VALUE) ids[name] = value;
  };
  put(ID, id === undefined ? undefined : scopedId(who.scope, id));
  put(ORIGIN_ID, originId === undefined ? undefined : scopedId(who.scope, originId));
  if (who.stanzaId) {
    put(STANZA_ID, scopedStanzaId(who.stanzaId.by, who.stanzaId.id));
    put(STANZA_ID_BY, who.stanzaId.by);
  }
  put(OCCUPANT_ID, who.occupantId);
  const echoOf = who.fromUs ? (originId ?? id) : undefined;
  if (echoOf !== undefined) put(ECHO_ID_KEY, echoOf);

  let key: string;
  if (who.stanzaId) key = who.chat === 'groupchat' ? idem.muc(who.conversation, who.stanzaId.id) : idem.archive(ctx.account, who.stanzaId.id);
  else if (originId ?? id) key = idem.origin(who.scope, (originId ?? id) as string);
  else key = idem.origin(who.scope, `h:${createHash('sha256').update(message.toString()).digest('hex').slice(0, 32)}`);

  const stamp = source.kind === 'archive' ? (source.stamp ?? delayStamp(message)) : delayStamp(message);
  const receiptFor = who.chat === 'chat' && !who.fromUs && source.kind === 'live' && !source.carbon && message.getChild('request', NS.receipts) && id ? id : undefined;
  return {
    ok: true,
    value: {
      chat: who.chat,
      conversation: who.conversation,
      sender: who.sender,
      fromUs: who.fromUs,
      echoOf,
      ids,
      idem: fit(key, 512),
      archived: who.stanzaId ? { archive: who.stanzaId.by, id: who.stanzaId.id } : undefined,
      ts: { ...(stamp !== undefined ? { origin: stamp } : {}), received: ctx.now },
      historical: source.kind === 'archive',
      action: act,
      receiptFor,
      stanzaAttrId: id,
      encrypted: act.kind === 'message' || act.kind === 'edit' ? act.content.undecryptable : undefined,
    },
  };
}

/** The relations a parsed message needs resolved, by name. */
export function refsOf(action: Action): Array<[name: 'replyTo' | 'replaces' | 'redacts' | 'reactsTo' | 'upTo', ref: Ref]> {
  switch (action.kind) {
    case 'message':
      return action.replyTo ? [['replyTo', action.replyTo]] : [];
    case 'edit':
      return [['replaces', action.replaces]];
    case 'retraction':
      return [['redacts', action.redacts]];
    case 'reaction':
      return [['reactsTo', action.reactsTo]];
    case 'marker':
    case 'receipt':
      return [['upTo', action.upTo]];
  }
}

export interface DraftOptions {
  readonly room: string;
  readonly via: string;
  /** resolved event ids of the references (see refsOf); a reply whose target is unknown goes without it */
  readonly targets: Partial<Record<'replyTo' | 'replaces' | 'redacts' | 'reactsTo' | 'upTo', string>>;
}

/** Builds the draft once the references are resolved; undefined when a required target is missing. */
export function toDraft(p: Parsed, options: DraftOptions): EventDraft | undefined {
  const base = {
    v: 1 as const,
    idem: p.idem,
    room: options.room,
    sender: p.sender,
    origin: { proto: 'xmpp' as const, via: options.via, ids: { ...p.ids }, ...(p.historical ? { historical: true } : {}) },
    ts: { ...p.ts },
  };
  const t = options.targets;
  const a = p.action;
  switch (a.kind) {
    case 'message':
      return { ...base, kind: 'message', content: a.content, ...(t.replyTo ? { rel: { replyTo: t.replyTo } } : {}) };
    case 'edit':
      return t.replaces ? { ...base, kind: 'edit', content: a.content, rel: { replaces: t.replaces } } : undefined;
    case 'retraction':
      return t.redacts ? { ...base, kind: 'retraction', rel: { redacts: t.redacts } } : undefined;
    case 'reaction':
      return t.reactsTo ? { ...base, kind: 'reaction', rel: { reactsTo: t.reactsTo }, reaction: { keys: [...a.keys] } } : undefined;
    case 'marker':
      return t.upTo ? { ...base, kind: 'marker', rel: { upTo: t.upTo } } : undefined;
    case 'receipt':
      return t.upTo ? { ...base, kind: 'receipt', rel: { upTo: t.upTo }, receipt: { type: 'delivered' } } : undefined;
  }
}

/** For tests and logs: the code-point length helper the fallback offsets use. */
export { codePointLength };
