/**
 * The stored form of an event: one stream field, `e`, whose value is a flat
 * JSON array (STORED below). One field instead of ten is one string to read
 * per entry instead of twenty (field names included) and one JSON.parse to
 * decode it: reading a backlog was dominated by those strings and the garbage
 * they made (issue 19). Positions and ids are not stored: the room and the
 * stream id carry them.
 *
 * Format 3 (field `f`) is format 2 with fewer bytes (issue 19, point 6): the
 * received time as an offset from the entry id's milliseconds (the id is
 * made inside the append script, which writes the offset in front of the
 * rest: encodeEventTail), an idempotency key that ends with one of the
 * origin ids stored without that end, and a sender's native id that starts
 * with the uid stored without that start.
 *
 * Logs written before (format 1: ten fields k i s o t u b c r x, always all
 * present and in that order) stay readable: decodeFields tells them apart
 * by the field count and name. encodeFieldsV1 still writes format 1, for
 * the tests that prove it.
 */
import type { Content, EventDraft, EventKind, LogEvent, Origin, Sender } from '../core/event.js';
import type { DeviceView } from '../core/ports.js';
import { SyncgateError } from '../core/errors.js';

/** format 1's field names */
export const FIELD_NAMES = ['k', 'i', 's', 'o', 't', 'u', 'b', 'c', 'r', 'x'] as const;

/** format 2's only field */
export const EVENT_FIELD = 'e';

/** format 3's only field */
export const EVENT_FIELD_3 = 'f';

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

const KINDS: readonly EventKind[] = ['message', 'edit', 'retraction', 'reaction', 'marker', 'receipt', 'presence', 'typing', 'telemetry'];
const PROTOS: readonly Sender['proto'][] = ['xmpp', 'matrix', 'mqtt', 'api'];
const AUTHS: readonly Sender['auth'][] = ['server', 'occupant-id', 'broker-acl', 'api-token', 'claimed'];
const KIND_INDEX = new Map(KINDS.map((k, i) => [k, i]));
const PROTO_INDEX = new Map(PROTOS.map((k, i) => [k, i]));
const AUTH_INDEX = new Map(AUTHS.map((k, i) => [k, i]));

/**
 * Format 2's array, by position; trailing nulls are left out (a plain
 * message ends at its body):
 * 0 head: one integer for kind, sender proto, auth, origin proto, puppet and
 *   historical (see `head`), instead of five quoted words and two flags;
 * 1 idem, 2 sender uid, 3 sender native, 4 display|null, 5 via, 6 origin ids,
 * 7 ts.received, 8 content body|null (null: the kind has no content),
 * 9 the rest of the content|null, 10 rel|null, 11 the kind's extra|null,
 * 12 ts.origin|null.
 */
type Stored = [
  number,
  string,
  string,
  string,
  string | null,
  string,
  Record<string, string>,
  number,
  (string | null)?,
  (Record<string, unknown> | null)?,
  unknown?,
  unknown?,
  (number | null)?,
];

function head(draft: EventDraft, flags = 0): number {
  const s = draft.sender;
  const o = draft.origin;
  const index = (map: ReadonlyMap<string, number>, key: string): number => {
    const i = map.get(key);
    if (i === undefined) throw new SyncgateError('SG_ERR_INTERNAL', `no stored code for ${key}`);
    return i;
  };
  let h = flags * 2 + (o.historical ? 1 : 0);
  h = h * 2 + (s.puppet ? 1 : 0);
  h = h * PROTOS.length + index(PROTO_INDEX, o.proto);
  h = h * AUTHS.length + index(AUTH_INDEX, s.auth);
  h = h * PROTOS.length + index(PROTO_INDEX, s.proto);
  return h * KINDS.length + index(KIND_INDEX, draft.kind);
}

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

/** Appends the stored array's last five elements to `a`, the same in formats 2 and 3: body, rest of the content, rel, the kind's extra, ts.origin. */
function pushTailElements(a: unknown[], draft: EventDraft): unknown[] {
  a.push(
    'content' in draft ? wellFormed(draft.content.body) : null,
    'content' in draft ? (contentRestOf(draft.content) ?? null) : null,
    'rel' in draft && draft.rel ? draft.rel : null,
    extraOf(draft) ?? null,
    draft.ts.origin ?? null,
  );
  return a;
}

/**
 * Format 2's value: the event as one JSON text. Raw text values are made
 * well-formed as format 1 did: JSON.stringify escapes a lone surrogate, and
 * what is read back must be what format 1 gave (U+FFFD).
 */
export function encodeEvent(draft: EventDraft): string {
  const s = draft.sender;
  const o = draft.origin;
  const a = pushTailElements([head(draft), wellFormed(draft.idem), s.uid, s.native, s.display ?? null, o.via, o.ids, draft.ts.received], draft);
  while (a.length > 8 && a[a.length - 1] === null) a.pop();
  return JSON.stringify(a);
}

/** Flat `[field, value]` as XADD takes it (format 2). */
export function encodeFields(draft: EventDraft): string[] {
  return [EVENT_FIELD, encodeEvent(draft)];
}

/** an origin id shorter than this is not worth a reference from the idempotency key */
const MIN_IDEM_REF = 4;

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

/**
 * Format 3's text after the received offset: `,head,…]`. The append script
 * writes `[`, the received time less the new entry id's milliseconds, and
 * this; storedText3 does the same for a known id. The idempotency key
 * leaves out an end that is one of the origin ids (an API key ends with its
 * txnId, a Matrix key with its event id), the native id a start that is the
 * uid (an API sender's native id is its uid): the head's flags say which.
 */
export function encodeEventTail(draft: EventDraft): string {
  const s = draft.sender;
  const o = draft.origin;
  let idem = wellFormed(draft.idem);
  let idemRef = 0;
  if (idem === draft.idem) {
    let longest = MIN_IDEM_REF - 1;
    let j = 0;
    for (const value of Object.values(o.ids)) {
      j++;
      if (value.length > longest && idem.length > value.length && idem.endsWith(value)) {
        longest = value.length;
        idemRef = j;
      }
    }
    if (idemRef > 0) idem = idem.slice(0, idem.length - longest);
  }
  let native = s.native;
  let nativeRel = 0;
  if (s.uid.length > 0 && native.startsWith(s.uid) && !isLowSurrogate(native.charCodeAt(s.uid.length))) {
    native = native.slice(s.uid.length);
    nativeRel = 1;
  }
  const a = pushTailElements([head(draft, idemRef * 2 + nativeRel), idem, s.uid, native, s.display ?? null, o.via, o.ids], draft);
  while (a.length > 7 && a[a.length - 1] === null) a.pop();
  return `,${JSON.stringify(a).slice(1)}`;
}

/** Format 3's stored text of an event whose entry id has `base` as its milliseconds (what the append script writes). */
export function storedText3(draft: EventDraft, base: number): string {
  return `[${draft.ts.received - base}${encodeEventTail(draft)}`;
}

interface Head {
  readonly kind: EventKind;
  readonly sproto: Sender['proto'];
  readonly auth: Sender['auth'];
  readonly oproto: Origin['proto'];
  readonly puppet: boolean;
  readonly historical: boolean;
  /** format 3: 0, or j + 1 when the stored idem leaves out its end, the value of origin id j (in key order) */
  readonly idemRef: number;
  /** format 3: the stored native id leaves out its start, the uid */
  readonly nativeRel: boolean;
}

/** The parts of a head integer (see `head`); undefined for one no build wrote (format 2 has no flags). */
function headParts(value: number, format: 2 | 3 = 2): Head | undefined {
  let h = value;
  const kind = KINDS[h % KINDS.length];
  h = Math.floor(h / KINDS.length);
  const sproto = PROTOS[h % PROTOS.length];
  h = Math.floor(h / PROTOS.length);
  const auth = AUTHS[h % AUTHS.length];
  h = Math.floor(h / AUTHS.length);
  const oproto = PROTOS[h % PROTOS.length];
  h = Math.floor(h / PROTOS.length);
  if (kind === undefined || sproto === undefined || auth === undefined || oproto === undefined || !(h >= 0 && (h <= 3 || format === 3))) return undefined;
  const flags = Math.floor(h / 4);
  return { kind, sproto, auth, oproto, puppet: h % 2 === 1, historical: h % 4 >= 2, idemRef: flags >> 1, nativeRel: (flags & 1) === 1 };
}

/** the value of origin id `ref` (1-based, in key order): the end format 3 left out of the idempotency key */
function idemEnd(room: string, ids: Readonly<Record<string, string>>, ref: number): string {
  let j = 0;
  for (const key in ids) if (++j === ref) return ids[key] as string;
  throw new SyncgateError('SG_ERR_INTERNAL', `stored event in ${room} refers to origin id ${ref} of ${j}`);
}

/**
 * Decodes format 2's text, or format 3's when `base` (the entry id's
 * milliseconds) is given: format 3 is format 2's array with the received
 * time moved in front as an offset from `base`, and the head's flags.
 */
function decodeEvent(room: string, json: string, base?: number): EventDraft {
  const a = JSON.parse(json) as unknown[];
  const o = base === undefined ? 0 : 1;
  const head = a[o] as number;
  const parts = headParts(head, base === undefined ? 2 : 3);
  if (!parts) throw new SyncgateError('SG_ERR_INTERNAL', `stored event in ${room} has an unknown head ${head}`);
  const { kind, sproto, auth, oproto } = parts;
  // format 2's places: elements 7 (format 2's received time) and 8 … 12, at the same places in format 3
  const s = a as Stored;
  const uid = a[o + 2] as string;
  const ids = a[o + 6] as Record<string, string>;
  const sender: Sender = { uid, proto: sproto, native: parts.nativeRel ? uid + (a[o + 3] as string) : (a[o + 3] as string), auth };
  const display = a[o + 4] as string | null;
  if (display !== null) sender.display = display;
  if (parts.puppet) sender.puppet = true;
  const origin: Origin = { proto: oproto, via: a[o + 5] as string, ids };
  if (parts.historical) origin.historical = true;
  const received = base === undefined ? s[7] : base + (a[0] as number);
  const originTs = s[12];
  const ts: EventDraft['ts'] = originTs === undefined || originTs === null ? { received } : { received, origin: originTs };
  let idem = a[o + 1] as string;
  if (parts.idemRef > 0) idem += idemEnd(room, ids, parts.idemRef);
  const draft: Record<string, unknown> = { v: 1, kind, idem, room, sender, origin, ts };
  const body = s[8];
  if (body !== undefined && body !== null) {
    const rest = s[9];
    draft['content'] = rest === undefined || rest === null ? { body } : { body, ...rest };
  }
  const rel = s[10];
  if (rel !== undefined && rel !== null) draft['rel'] = rel;
  const extraField = EXTRA_FIELD[kind];
  const extra = s[11];
  if (extraField && extra !== undefined && extra !== null) draft[extraField] = extra;
  // Written by encodeEvent from a validated draft: the shape is known.
  return draft as EventDraft;
}

/**
 * A stored value (the JSON text) decoded: format 2's, or format 3's given
 * `base`, its entry id's milliseconds. What decodeFields does for
 * `[EVENT_FIELD, text]` and `[EVENT_FIELD_3, text]`.
 */
export function decodeStored(room: string, text: string, base?: number): EventDraft {
  return decodeEvent(room, text, base);
}

/**
 * The inverse of `encodeFields`, for entries this module wrote: format 2,
 * format 3 (its entry id's milliseconds are `base`), or format 1 (ten fields).
 */
export function decodeFields(room: string, values: readonly string[], base?: number): EventDraft {
  if (values.length === 2 && values[0] === EVENT_FIELD) return decodeEvent(room, values[1] ?? '');
  if (values.length === 2 && values[0] === EVENT_FIELD_3) {
    if (base === undefined) throw new SyncgateError('SG_ERR_INTERNAL', `a format-3 entry of ${room} read without its id`);
    return decodeEvent(room, values[1] ?? '', base);
  }
  return decodeFieldsV1(room, values);
}

/** Format 1 only: what builds before format 2 read (a format-2 entry fails here, as it did there). */
export function decodeFieldsV1(room: string, values: readonly string[]): EventDraft {
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

/** The stored JSON text of an entry's field list (format 2 or 3) and its format; undefined for a format-1 entry. */
export function storedJson(values: readonly string[]): { text: string; format: 2 | 3 } | undefined {
  if (values.length !== 2 || values[1] === undefined) return undefined;
  if (values[0] === EVENT_FIELD) return { text: values[1], format: 2 };
  return values[0] === EVENT_FIELD_3 ? { text: values[1], format: 3 } : undefined;
}

/** Index just past the JSON string starting at `i` (a quote); -1 when it does not end. */
function endOfString(text: string, i: number): number {
  let from = i + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) return -1;
    let backslashes = 0;
    for (let b = quote - 1; text.charCodeAt(b) === 92; b--) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    from = quote + 1;
  }
}

/** Index just past the JSON object or array starting at `i`; -1 when it does not end. */
function endOfNested(text: string, i: number): number {
  let depth = 0;
  let j = i;
  while (j < text.length) {
    const c = text.charCodeAt(j);
    if (c === 34) {
      j = endOfString(text, j);
      if (j < 0) return -1;
      continue;
    }
    if (c === 123 || c === 91) depth++;
    else if (c === 125 || c === 93) {
      depth--;
      if (depth === 0) return j + 1;
    }
    j++;
  }
  return -1;
}

/** Where the array element starting at `i` ends (a string, a nested value, or a literal up to the next `,` or `]`). */
function endOfElement(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 34) return endOfString(text, i);
  if (c === 123 || c === 91) return endOfNested(text, i);
  let j = i;
  while (j < text.length && text.charCodeAt(j) !== 44 && text.charCodeAt(j) !== 93) j++;
  return j;
}

/**
 * The texts of a JSON array's elements, as JSON.stringify wrote it (no
 * whitespace): found by skipping strings and nested values, nothing parsed.
 * undefined when the text is not such an array.
 */
export function arrayElements(text: string): string[] | undefined {
  if (text.charCodeAt(0) !== 91) return undefined;
  const out: string[] = [];
  if (text.charCodeAt(1) === 93) return text.length === 2 ? out : undefined;
  let i = 1;
  while (i < text.length) {
    const start = i;
    i = endOfElement(text, i);
    if (i <= start || i >= text.length) return undefined;
    out.push(text.slice(start, i));
    const sep = text.charCodeAt(i);
    if (sep === 93) return i === text.length - 1 ? out : undefined;
    if (sep !== 44) return undefined;
    i++;
  }
  return undefined;
}

/** origin ids as the view has them (hidden ones left out) and the sending device's txnId, if this is it */
function viewIds(ids: Readonly<Record<string, string>>, view: DeviceView): { ids: Record<string, string> | undefined; txnId: string | undefined } {
  const txnId = ids[view.echo.deviceKey] === view.echo.deviceId && Object.hasOwn(ids, view.echo.deviceKey) ? ids[view.echo.txnKey] : undefined;
  if (!view.hiddenIds.some((key) => Object.hasOwn(ids, key))) return { ids: undefined, txnId };
  const kept: Record<string, string> = {};
  for (const [key, value] of Object.entries(ids)) if (!view.hiddenIds.includes(key)) kept[key] = value;
  return { ids: kept, txnId };
}

/**
 * The JSON text of a device's view of an event (DeviceView): what
 * JSON.stringify gives for the event without `idem`, with the view's ids and
 * `unsigned`. The reference for viewJsonOfStored.
 */
export function viewJsonOfEvent(event: LogEvent, view: DeviceView): string {
  const { ids, txnId } = viewIds(event.origin.ids, view);
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(event) as Array<keyof LogEvent>) {
    if (key !== 'idem') out[key] = key === 'origin' && ids !== undefined ? { ...event.origin, ids } : event[key];
  }
  if (txnId !== undefined) out['unsigned'] = { txnId };
  return JSON.stringify(out);
}

/** A DeviceView's keys and device id as JSON texts, worked out once per view object. */
interface PreparedView {
  readonly hidden: ReadonlySet<string>;
  readonly deviceKey: string;
  readonly txnKey: string;
  readonly deviceId: string;
}
const prepared = new WeakMap<DeviceView, PreparedView>();
function preparedView(view: DeviceView): PreparedView {
  let p = prepared.get(view);
  if (!p) {
    p = { hidden: new Set(view.hiddenIds.map((k) => JSON.stringify(k))), deviceKey: JSON.stringify(view.echo.deviceKey), txnKey: JSON.stringify(view.echo.txnKey), deviceId: JSON.stringify(view.echo.deviceId) };
    prepared.set(view, p);
  }
  return p;
}

/**
 * viewIds on the JSON text of origin ids (string values, as JSON.stringify
 * wrote them: keys compare as text): the kept members' text and the device's
 * txnId as JSON text. undefined when the text is not such an object.
 */
function viewIdsText(text: string, view: PreparedView): { ids: string; txnId: string | undefined } | undefined {
  if (text.charCodeAt(0) !== 123) return undefined;
  let kept = '';
  let dropped = false;
  let device: string | undefined;
  let txn: string | undefined;
  let i = 1;
  while (i < text.length) {
    if (text.charCodeAt(i) !== 34) return undefined;
    const keyEnd = endOfString(text, i);
    if (keyEnd < 0 || text.charCodeAt(keyEnd) !== 58 || text.charCodeAt(keyEnd + 1) !== 34) return undefined;
    const valueEnd = endOfString(text, keyEnd + 1);
    if (valueEnd < 0) return undefined;
    const key = text.slice(i, keyEnd);
    const value = text.slice(keyEnd + 1, valueEnd);
    if (key === view.deviceKey) device = value;
    if (key === view.txnKey) txn = value;
    if (view.hidden.has(key)) dropped = true;
    else kept += kept === '' ? text.slice(i, valueEnd) : `,${text.slice(i, valueEnd)}`;
    const sep = text.charCodeAt(valueEnd);
    if (sep === 125) {
      if (valueEnd !== text.length - 1) return undefined;
      return { ids: dropped ? `{${kept}}` : text, txnId: device === view.deviceId ? txn : undefined };
    }
    if (sep !== 44) return undefined;
    i = valueEnd + 1;
  }
  return undefined;
}


/** Element bounds of the stored text being viewed: element i is text[at[2i], at[2i+1]). Reused: a view is written synchronously. */
const at = new Int32Array(2 * 16);

/**
 * The bounds of a stored array's elements into `at`, as arrayElements finds
 * them but without cutting them out (a view uses 10 of the 13 and skips
 * `idem`); how many there are, or -1 when the text is not such an array.
 */
function elementBounds(text: string): number {
  if (text.charCodeAt(0) !== 91) return -1;
  let i = 1;
  let n = 0;
  while (i < text.length && n < 16) {
    const start = i;
    i = endOfElement(text, i);
    if (i <= start || i >= text.length) return -1;
    at[2 * n] = start;
    at[2 * n + 1] = i;
    n++;
    const sep = text.charCodeAt(i);
    if (sep === 93) return i === text.length - 1 ? n : -1;
    if (sep !== 44) return -1;
    i++;
  }
  return -1;
}

function bound(k: number): number {
  return at[k] ?? 0;
}

/** element i's text (the caller checked i < the count) */
function el(text: string, i: number): string {
  return text.slice(bound(2 * i), bound(2 * i + 1));
}

/** element i is present: within the count and not `null` */
function has(text: string, i: number, count: number): boolean {
  return i < count && !(bound(2 * i + 1) - bound(2 * i) === 4 && text.charCodeAt(bound(2 * i)) === 110);
}

/** element i's digits as an integer, read in place (a leading `-` allowed); NaN when it is not a plain integer */
function intValue(text: string, i: number): number {
  let from = bound(2 * i);
  const end = bound(2 * i + 1);
  const negative = text.charCodeAt(from) === 45;
  if (negative) from++;
  let v = 0;
  for (let k = from; k < end; k++) {
    const c = text.charCodeAt(k) - 48;
    if (c < 0 || c > 9) return Number.NaN;
    v = v * 10 + c;
  }
  if (end <= from) return Number.NaN;
  return negative ? -v : v;
}

/** the room's JSON text, kept for the next event: a page's events come from a handful of rooms */
let lastRoom = '';
let lastRoomJson = '""';

/**
 * viewJsonOfEvent of a format-2 entry, or of a format-3 entry given `base`
 * (its id's milliseconds), written from its stored JSON text without
 * decoding it: the elements are cut out of the text and placed in
 * the view's members (the same members, in the same order, as decoding and
 * JSON.stringify give). Only the origin ids are parsed, and only when they
 * name an id the view hides or the device's key. A catch-up page of 1,000
 * events was mostly JSON.parse and JSON.stringify of what Redis already held
 * as JSON (issue 19, point 1). The elements are found as bounds and only
 * the ones the view holds are cut out (no array of element texts, no `idem`):
 * about half the CPU of cutting all of them first (issue 19, fourth pass).
 * undefined when the text is not format 2 as encodeEvent writes it, or
 * format 3 as the append script does (the caller decodes it instead).
 */
export function viewJsonOfStored(stored: string, room: string, eventId: string, cursor: string, view: DeviceView, base?: number): string | undefined {
  const count = elementBounds(stored);
  if (count < 8) return undefined;
  // format 3: the received offset in front, format 2's elements 0 … 6 one further on
  const o = base === undefined ? 0 : 1;
  const parts = headParts(intValue(stored, o), base === undefined ? 2 : 3);
  if (!parts) return undefined;
  let ids = el(stored, o + 6);
  let txnId: string | undefined;
  if (ids !== '{}') {
    const seen = viewIdsText(ids, preparedView(view));
    if (seen === undefined) return undefined;
    ({ ids, txnId } = seen);
  }
  if (room !== lastRoom) {
    lastRoomJson = JSON.stringify(room);
    lastRoom = room;
  }
  const uid = el(stored, o + 2);
  // format 3 may store the native id without the uid it starts with: the two JSON strings joined
  const native = parts.nativeRel ? `${uid.slice(0, -1)}${el(stored, o + 3).slice(1)}` : el(stored, o + 3);
  let json = `{"v":1,"kind":"${parts.kind}","room":${lastRoomJson},"sender":{"uid":${uid},"proto":"${parts.sproto}","native":${native},"auth":"${parts.auth}"`;
  if (has(stored, o + 4, count)) json += `,"display":${el(stored, o + 4)}`;
  if (parts.puppet) json += ',"puppet":true';
  json += `},"origin":{"proto":"${parts.oproto}","via":${el(stored, o + 5)},"ids":${ids}`;
  if (parts.historical) json += ',"historical":true';
  if (base === undefined) json += `},"ts":{"received":${el(stored, 7)}`;
  else {
    const offset = intValue(stored, 0);
    if (Number.isNaN(offset)) return undefined;
    json += `},"ts":{"received":${base + offset}`;
  }
  if (has(stored, 12, count)) json += `,"origin":${el(stored, 12)}`;
  json += '}';
  if (has(stored, 8, count)) {
    const body = el(stored, 8);
    const rest = has(stored, 9, count) ? el(stored, 9) : '{}';
    json += rest !== '{}' ? `,"content":{"body":${body},${rest.slice(1)}` : `,"content":{"body":${body}}`;
  }
  if (has(stored, 10, count)) json += `,"rel":${el(stored, 10)}`;
  const extraField = EXTRA_FIELD[parts.kind];
  if (extraField && has(stored, 11, count)) json += `,"${extraField}":${el(stored, 11)}`;
  json += `,"eventId":${JSON.stringify(eventId)},"cursor":${JSON.stringify(cursor)}`;
  if (txnId !== undefined) json += `,"unsigned":{"txnId":${txnId}}`;
  return `${json}}`;
}
