/**
 * The stored form of an event: a fixed list of short flat fields, always all
 * present and in the same order. Redis stream listpacks then store the field
 * names once per node (SAMEFIELDS), which is most of the memory saving
 * measured when the layout was chosen. Positions and ids are not stored: the
 * room and the stream id carry them.
 */
import type { Content, EventDraft, EventKind, Origin, Sender } from '../core/event.js';
import { SyncgateError } from '../core/errors.js';

export const FIELD_NAMES = ['k', 'i', 's', 'o', 't', 'u', 'b', 'c', 'r', 'x'] as const;

/** One-letter kind codes: the kind is in every entry. */
const KIND_CODE: Record<EventKind, string> = {
  message: 'm',
  edit: 'e',
  retraction: 'd',
  reaction: 'a',
  marker: 'k',
  receipt: 'c',
  presence: 'p',
  typing: 'y',
  telemetry: 't',
};
const KIND_OF = new Map(Object.entries(KIND_CODE).map(([kind, code]) => [code, kind as EventKind]));

type SenderTuple = [string, Sender['proto'], string, string | null, Sender['auth'], 0 | 1];
type OriginTuple = [Origin['proto'], string, Record<string, string>, 0 | 1];

/** The kind-specific extras that are neither content nor relations. */
function extraOf(draft: EventDraft): unknown {
  switch (draft.kind) {
    case 'reaction':
      return draft.reaction;
    case 'receipt':
      return draft.receipt;
    case 'presence':
      return draft.presence;
    case 'typing':
      return draft.typing;
    case 'telemetry':
      return draft.telemetry;
    default:
      return undefined;
  }
}

const EXTRA_FIELD: Partial<Record<EventKind, string>> = {
  reaction: 'reaction',
  receipt: 'receipt',
  presence: 'presence',
  typing: 'typing',
  telemetry: 'telemetry',
};

/** The content besides its body, as JSON; `-` when there is nothing else (most messages: no copy is made). */
function contentRest(content: Content): string {
  for (const key in content) {
    if (key !== 'body') {
      const { body: _body, ...rest } = content;
      return JSON.stringify(rest);
    }
  }
  return '-';
}

/** A string with no lone surrogate (replaced by U+FFFD, as UTF-8 encoding does anyway). */
function wellFormed(text: string): string {
  const t = text as string & { isWellFormed(): boolean; toWellFormed(): string };
  return t.isWellFormed() ? text : t.toWellFormed();
}

/**
 * The ten values in FIELD_NAMES order (the append script adds the names),
 * appended to `out`. Raw text values are made well-formed: the batch reaches
 * Redis as JSON, whose decoder refuses an escaped lone surrogate.
 */
export function encodeValues<T>(draft: EventDraft, out: Array<T | string> = []): Array<T | string> {
  const s = draft.sender;
  const o = draft.origin;
  // Tuples written as JSON by hand around JSON-quoted parts: the same text as
  // JSON.stringify of the tuple, without building the tuple first.
  const sender = `[${JSON.stringify(s.uid)},"${s.proto}",${JSON.stringify(s.native)},${s.display === undefined ? 'null' : JSON.stringify(s.display)},"${s.auth}",${s.puppet ? 1 : 0}]`;
  const origin = `["${o.proto}",${JSON.stringify(o.via)},${JSON.stringify(o.ids)},${o.historical ? 1 : 0}]`;
  // The body is stored raw (no JSON quoting); the rest of the content, when there is any, as JSON.
  let body = '';
  let content = '';
  if ('content' in draft) {
    body = draft.content.body;
    content = contentRest(draft.content);
  }
  const rel = 'rel' in draft && draft.rel ? JSON.stringify(draft.rel) : '';
  const extra = extraOf(draft);
  out.push(
    KIND_CODE[draft.kind],
    wellFormed(draft.idem),
    sender,
    origin,
    String(draft.ts.received),
    draft.ts.origin === undefined ? '' : String(draft.ts.origin),
    wellFormed(body),
    content,
    rel,
    extra === undefined ? '' : JSON.stringify(extra),
  );
  return out;
}

/** Flat `[field, value, field, value, …]` as XADD takes it. */
export function encodeFields(draft: EventDraft): string[] {
  return encodeValues<string>(draft).flatMap((value, i) => [FIELD_NAMES[i] as string, value]);
}

/** The inverse of `encodeFields`, for entries this module wrote. */
export function decodeFields(room: string, values: readonly string[]): EventDraft {
  // values is the flat [f, v, f, v …] reply; we read by position because we always write all fields in order.
  const v = (i: number): string => {
    const value = values[i * 2 + 1];
    if (value === undefined) throw new SyncgateError('SG_ERR_INTERNAL', `stored event in ${room} lacks field ${FIELD_NAMES[i]}`);
    return value;
  };
  const kind = KIND_OF.get(v(0));
  if (!kind) throw new SyncgateError('SG_ERR_INTERNAL', `stored event in ${room} has unknown kind ${v(0)}`);
  const [uid, proto, native, display, auth, puppet] = JSON.parse(v(2)) as SenderTuple;
  const sender: Sender = { uid, proto, native, auth };
  if (display !== null) sender.display = display;
  if (puppet === 1) sender.puppet = true;
  const [oproto, via, ids, historical] = JSON.parse(v(3)) as OriginTuple;
  const origin: Origin = { proto: oproto, via, ids };
  if (historical === 1) origin.historical = true;
  const ts: EventDraft['ts'] = { received: Number(v(4)) };
  if (v(5) !== '') ts.origin = Number(v(5));

  const draft: Record<string, unknown> = { v: 1, kind, idem: v(1), room, sender, origin, ts };
  const rest = v(7);
  if (rest !== '') draft['content'] = rest === '-' ? { body: v(6) } : { body: v(6), ...(JSON.parse(rest) as object) };
  if (v(8) !== '') draft['rel'] = JSON.parse(v(8));
  const extraField = EXTRA_FIELD[kind];
  if (extraField && v(9) !== '') draft[extraField] = JSON.parse(v(9));
  // Written by encodeFields from a validated draft: the shape is known.
  return draft as EventDraft;
}
