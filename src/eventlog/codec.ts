/**
 * The stored form of an event: one stream field, `e`, whose value is a flat
 * JSON array (STORED below). One field instead of ten is one string to read
 * per entry instead of twenty (field names included) and one JSON.parse to
 * decode it: reading a backlog was dominated by those strings and the garbage
 * they made (issue 19). Positions and ids are not stored: the room and the
 * stream id carry them.
 *
 * Logs written before (format 1: ten fields k i s o t u b c r x, always all
 * present and in that order) stay readable: decodeFields tells the two apart
 * by the field count. encodeFieldsV1 still writes format 1, for the tests
 * that prove it.
 */
import type { Content, EventDraft, EventKind, Origin, Sender } from '../core/event.js';
import { SyncgateError } from '../core/errors.js';

/** format 1's field names */
export const FIELD_NAMES = ['k', 'i', 's', 'o', 't', 'u', 'b', 'c', 'r', 'x'] as const;

/** format 2's only field */
export const EVENT_FIELD = 'e';

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

/** Format 1 as XADD takes it (flat `[field, value, …]`): what logs written before format 2 hold. */
export function encodeFieldsV1(draft: EventDraft): string[] {
  return encodeValues<string>(draft).flatMap((value, i) => [FIELD_NAMES[i] as string, value]);
}

/**
 * Format 2's array, by position (trailing nulls are left out):
 * 0 kind code, 1 idem, 2 sender uid, 3 sender proto, 4 sender native,
 * 5 display|null, 6 auth, 7 puppet 0|1, 8 origin proto, 9 via, 10 origin ids,
 * 11 historical 0|1, 12 ts.received, 13 ts.origin|null, 14 content body|null
 * (null: the kind has no content), 15 the rest of the content|null,
 * 16 rel|null, 17 the kind's extra|null.
 */
type Stored = [
  string,
  string,
  string,
  Sender['proto'],
  string,
  string | null,
  Sender['auth'],
  0 | 1,
  Origin['proto'],
  string,
  Record<string, string>,
  0 | 1,
  number,
  (number | null)?,
  (string | null)?,
  (Record<string, unknown> | null)?,
  (unknown)?,
  (unknown)?,
];

/** The content besides its body; undefined when there is nothing else (most messages: no copy is made). */
function contentRestOf(content: Content): Record<string, unknown> | undefined {
  for (const key in content) {
    if (key !== 'body') {
      const { body: _body, ...rest } = content;
      return rest;
    }
  }
  return undefined;
}

/**
 * Format 2's value: the event as one JSON text. Raw text values are made
 * well-formed as format 1 did: JSON.stringify escapes a lone surrogate, and
 * what is read back must be what format 1 gave (U+FFFD).
 */
export function encodeEvent(draft: EventDraft): string {
  const s = draft.sender;
  const o = draft.origin;
  const a: unknown[] = [
    KIND_CODE[draft.kind],
    wellFormed(draft.idem),
    s.uid,
    s.proto,
    s.native,
    s.display ?? null,
    s.auth,
    s.puppet ? 1 : 0,
    o.proto,
    o.via,
    o.ids,
    o.historical ? 1 : 0,
    draft.ts.received,
    draft.ts.origin ?? null,
    'content' in draft ? wellFormed(draft.content.body) : null,
    'content' in draft ? (contentRestOf(draft.content) ?? null) : null,
    'rel' in draft && draft.rel ? draft.rel : null,
    extraOf(draft) ?? null,
  ];
  while (a.length > 13 && a[a.length - 1] === null) a.pop();
  return JSON.stringify(a);
}

/** Flat `[field, value]` as XADD takes it (format 2). */
export function encodeFields(draft: EventDraft): string[] {
  return [EVENT_FIELD, encodeEvent(draft)];
}

function decodeEvent(room: string, json: string): EventDraft {
  const a = JSON.parse(json) as Stored;
  const kind = KIND_OF.get(a[0]);
  if (!kind) throw new SyncgateError('SG_ERR_INTERNAL', `stored event in ${room} has unknown kind ${a[0]}`);
  const sender: Sender = { uid: a[2], proto: a[3], native: a[4], auth: a[6] };
  if (a[5] !== null) sender.display = a[5];
  if (a[7] === 1) sender.puppet = true;
  const origin: Origin = { proto: a[8], via: a[9], ids: a[10] };
  if (a[11] === 1) origin.historical = true;
  const ts: EventDraft['ts'] = a[13] === undefined || a[13] === null ? { received: a[12] } : { received: a[12], origin: a[13] };
  const draft: Record<string, unknown> = { v: 1, kind, idem: a[1], room, sender, origin, ts };
  const body = a[14];
  if (body !== undefined && body !== null) {
    const rest = a[15];
    draft['content'] = rest === undefined || rest === null ? { body } : { body, ...rest };
  }
  const rel = a[16];
  if (rel !== undefined && rel !== null) draft['rel'] = rel;
  const extraField = EXTRA_FIELD[kind];
  const extra = a[17];
  if (extraField && extra !== undefined && extra !== null) draft[extraField] = extra;
  // Written by encodeEvent from a validated draft: the shape is known.
  return draft as EventDraft;
}

/** The inverse of `encodeFields`, for entries this module wrote: format 2, or format 1 (ten fields). */
export function decodeFields(room: string, values: readonly string[]): EventDraft {
  if (values.length === 2 && values[0] === EVENT_FIELD) return decodeEvent(room, values[1] ?? '');
  return decodeFieldsV1(room, values);
}

function decodeFieldsV1(room: string, values: readonly string[]): EventDraft {
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
