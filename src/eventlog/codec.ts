/**
 * The stored form of an event: a fixed list of short flat fields, always all
 * present and in the same order. Redis stream listpacks then store the field
 * names once per node (SAMEFIELDS), which is most of the memory saving
 * measured in PROTOCOL-NOTES §5.4. Positions and ids are not stored: the
 * room and the stream id carry them.
 */
import type { EventDraft, EventKind, Origin, Sender } from '../core/event.js';
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

/** Flat `[field, value, field, value, …]` as XADD takes it. */
export function encodeFields(draft: EventDraft): string[] {
  const s = draft.sender;
  const sender: SenderTuple = [s.uid, s.proto, s.native, s.display ?? null, s.auth, s.puppet ? 1 : 0];
  const o = draft.origin;
  const origin: OriginTuple = [o.proto, o.via, o.ids, o.historical ? 1 : 0];
  // The body is stored raw (no JSON quoting); the rest of the content, when there is any, as JSON.
  let body = '';
  let content = '';
  if ('content' in draft) {
    const { body: text, ...rest } = draft.content;
    body = text;
    content = Object.keys(rest).length > 0 ? JSON.stringify(rest) : '-';
  }
  const rel = 'rel' in draft && draft.rel ? JSON.stringify(draft.rel) : '';
  const extra = extraOf(draft);
  return [
    'k', KIND_CODE[draft.kind],
    'i', draft.idem,
    's', JSON.stringify(sender),
    'o', JSON.stringify(origin),
    't', String(draft.ts.received),
    'u', draft.ts.origin === undefined ? '' : String(draft.ts.origin),
    'b', body,
    'c', content,
    'r', rel,
    'x', extra === undefined ? '' : JSON.stringify(extra),
  ];
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
