/**
 * The normalised event: one closed, versioned union (docs/architecture.md, "The event").
 *
 * Adapters and the HTTP API build an `EventDraft`; the log assigns `eventId`
 * and `cursor` on append and hands back `LogEvent`s. Nothing downstream
 * branches on a protocol name: protocol details live in `origin.ids`.
 *
 * The TypeBox schemas are the single source for the TypeScript types, the
 * runtime validation at the edges and the HTTP route schemas.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { SyncgateError } from './errors.js';

export const EVENT_VERSION = 1 as const;

/** Room ids are short, url-safe and case-sensitive: they appear in paths and key names. */
export const RoomId = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$', description: 'gateway room id' });

export const Proto = Type.Union([Type.Literal('xmpp'), Type.Literal('matrix'), Type.Literal('mqtt'), Type.Literal('api')]);
export type Proto = Static<typeof Proto>;

const Text = (max: number) => Type.String({ maxLength: max });
const EventRef = Type.String({ minLength: 1, maxLength: 64, description: 'a gateway event id' });

export const Sender = Type.Object(
  {
    uid: Type.String({ minLength: 1, maxLength: 256 }),
    proto: Proto,
    native: Type.String({ minLength: 1, maxLength: 512 }),
    display: Type.Optional(Text(256)),
    auth: Type.Union([
      Type.Literal('server'),
      Type.Literal('occupant-id'),
      Type.Literal('broker-acl'),
      Type.Literal('api-token'),
      Type.Literal('claimed'),
    ]),
    puppet: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type Sender = Static<typeof Sender>;

export const Origin = Type.Object(
  {
    proto: Proto,
    /** the adapter instance / endpoint that observed the event, e.g. `xmpp:bridge` or `api` */
    via: Type.String({ minLength: 1, maxLength: 128 }),
    /** every native id of the event, e.g. `xmpp.stanzaId`, `mx.eventId`, `mqtt.msgId`, `api.txnId` */
    ids: Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 1024 })),
    historical: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type Origin = Static<typeof Origin>;

export const Timestamps = Type.Object(
  {
    origin: Type.Optional(Type.Integer({ minimum: 0 })),
    received: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
export type Timestamps = Static<typeof Timestamps>;

export const Attachment = Type.Object(
  {
    url: Type.String({ minLength: 1, maxLength: 4096 }),
    mime: Type.Optional(Text(255)),
    size: Type.Optional(Type.Integer({ minimum: 0 })),
    name: Type.Optional(Text(1024)),
  },
  { additionalProperties: false },
);
export type Attachment = Static<typeof Attachment>;

export const TextFormat = Type.Union([Type.Literal('html'), Type.Literal('xep0393'), Type.Literal('markdown')]);
export type TextFormat = Static<typeof TextFormat>;

/** 64 KiB of text is far above what any of the bridged protocols lets a person send. */
export const MAX_BODY_CHARS = 65_536;

/**
 * Why a message could not be read. The body of such a message is a neutral
 * notice (`UNDECRYPTABLE_NOTICE`), never the sender's fallback text; the
 * marker says why, so clients can show it their own way. The list grows with
 * what the adapters learn to tell apart (a new value is not a breaking change
 * for readers that treat an unknown reason as "could not be read"):
 * - the gateway does not decrypt this scheme (XMPP): `omemo` (OMEMO 0.3,
 *   `eu.siacs.conversations.axolotl`), `omemo2` (`urn:xmpp:omemo:1`/`:2`),
 *   `openpgp` (XEP-0373), `openpgp-legacy` (XEP-0027), `otr`, and
 *   `unknown-encryption` (an XEP-0380 marker for any other scheme);
 * - keys are missing (Matrix, issue 22): `keys-missing` (not received yet),
 *   `keys-withheld` (the sender's device refused them), `unknown-device`;
 * - an encrypted attachment (Matrix `content.file`) could not be given:
 *   `attachment-hash-mismatch` (the downloaded file is not the one the event
 *   names), `attachment-unavailable` (not downloadable, too large, or its
 *   description malformed). The body then says so, with the caption.
 */
export const UndecryptableReason = Type.Union(
  [
    Type.Literal('omemo'),
    Type.Literal('omemo2'),
    Type.Literal('openpgp'),
    Type.Literal('openpgp-legacy'),
    Type.Literal('otr'),
    Type.Literal('unknown-encryption'),
    Type.Literal('keys-missing'),
    Type.Literal('keys-withheld'),
    Type.Literal('unknown-device'),
    Type.Literal('attachment-hash-mismatch'),
    Type.Literal('attachment-unavailable'),
  ],
  { description: 'why the message could not be read' },
);
export type UndecryptableReason = Static<typeof UndecryptableReason>;

export const Undecryptable = Type.Object(
  {
    reason: UndecryptableReason,
    /** the protocol's name of the scheme, e.g. an XMPP namespace or a Matrix algorithm */
    scheme: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  },
  { additionalProperties: false, description: 'the message was encrypted and could not be read; the body is a notice saying so' },
);
export type Undecryptable = Static<typeof Undecryptable>;

/** The body of an undecryptable message: the same neutral sentence on every protocol. */
export const UNDECRYPTABLE_NOTICE = '[An encrypted message could not be read]';

/** The body of a message whose encrypted attachment could not be read (its caption follows, when it has one). */
export const UNREADABLE_ATTACHMENT_NOTICE = '[An encrypted attachment could not be read]';

export const Content = Type.Object(
  {
    body: Text(MAX_BODY_CHARS),
    format: Type.Optional(TextFormat),
    formatted: Type.Optional(Text(MAX_BODY_CHARS * 2)),
    mentions: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 100 })),
    attachments: Type.Optional(Type.Array(Attachment, { maxItems: 20 })),
    undecryptable: Type.Optional(Undecryptable),
  },
  { additionalProperties: false },
);
export type Content = Static<typeof Content>;

export const Relations = Type.Object(
  {
    replaces: Type.Optional(EventRef),
    replyTo: Type.Optional(EventRef),
    thread: Type.Optional(EventRef),
    reactsTo: Type.Optional(EventRef),
    redacts: Type.Optional(EventRef),
    upTo: Type.Optional(EventRef),
  },
  { additionalProperties: false },
);
export type Relations = Static<typeof Relations>;

const common = {
  v: Type.Literal(EVENT_VERSION),
  /** idempotency key: deterministic, from stable native ids (docs/protocols.md, "What every adapter does") */
  idem: Type.String({ minLength: 1, maxLength: 512 }),
  room: RoomId,
  sender: Sender,
  origin: Origin,
  ts: Timestamps,
};

const variant = <K extends string, P extends Record<string, TSchema>>(kind: K, props: P) =>
  Type.Object({ kind: Type.Literal(kind), ...common, ...props }, { additionalProperties: false });

const MessageDraft = variant('message', {
  content: Content,
  rel: Type.Optional(Type.Object({ replyTo: Type.Optional(EventRef), thread: Type.Optional(EventRef) }, { additionalProperties: false })),
});
const EditDraft = variant('edit', {
  content: Content,
  rel: Type.Object({ replaces: EventRef }, { additionalProperties: false }),
});
const RetractionDraft = variant('retraction', {
  rel: Type.Object({ redacts: EventRef }, { additionalProperties: false }),
});
const ReactionDraft = variant('reaction', {
  rel: Type.Object({ reactsTo: EventRef }, { additionalProperties: false }),
  /** the full set of the sender's reactions on the target after this event (XEP-0444 semantics) */
  reaction: Type.Object({ keys: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64, uniqueItems: true }) }, { additionalProperties: false }),
});
const MarkerDraft = variant('marker', {
  rel: Type.Object({ upTo: EventRef }, { additionalProperties: false }),
});
const ReceiptDraft = variant('receipt', {
  rel: Type.Object({ upTo: EventRef }, { additionalProperties: false }),
  receipt: Type.Object({ type: Type.Union([Type.Literal('delivered'), Type.Literal('displayed'), Type.Literal('read')]) }, { additionalProperties: false }),
});
const PresenceDraft = variant('presence', {
  presence: Type.Object(
    {
      state: Type.Union([Type.Literal('online'), Type.Literal('away'), Type.Literal('dnd'), Type.Literal('xa'), Type.Literal('offline')]),
      status: Type.Optional(Text(1024)),
    },
    { additionalProperties: false },
  ),
});
const TypingDraft = variant('typing', {
  typing: Type.Object({ active: Type.Boolean(), timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })) }, { additionalProperties: false }),
});
const TelemetryDraft = variant('telemetry', {
  telemetry: Type.Object(
    { contentType: Type.String({ minLength: 1, maxLength: 255 }), payload: Type.String({ maxLength: 1_048_576 }), topic: Type.Optional(Text(1024)) },
    { additionalProperties: false },
  ),
});

export const EventDraft = Type.Union([
  MessageDraft,
  EditDraft,
  RetractionDraft,
  ReactionDraft,
  MarkerDraft,
  ReceiptDraft,
  PresenceDraft,
  TypingDraft,
  TelemetryDraft,
]);
export type EventDraft = Static<typeof EventDraft>;
export type EventKind = EventDraft['kind'];
export type DraftOf<K extends EventKind> = Extract<EventDraft, { kind: K }>;

/** Kinds kept in the durable room timeline; the others are ephemeral or telemetry (docs/architecture.md, "The event"). */
export const TIMELINE_KINDS = ['message', 'edit', 'retraction', 'reaction', 'marker', 'receipt'] as const satisfies readonly EventKind[];
export type TimelineKind = (typeof TIMELINE_KINDS)[number];
export function isTimelineKind(kind: EventKind): kind is TimelineKind {
  return (TIMELINE_KINDS as readonly string[]).includes(kind);
}

/** Position fields the log adds; clients treat both as opaque strings. */
export interface Positioned {
  /** time-ordered, minted once by the log on the first append */
  readonly eventId: string;
  /** the event's position token (see src/core/cursor.ts) */
  readonly cursor: string;
}

export type LogEvent = EventDraft & Positioned;

const VARIANTS = {
  message: MessageDraft,
  edit: EditDraft,
  retraction: RetractionDraft,
  reaction: ReactionDraft,
  marker: MarkerDraft,
  receipt: ReceiptDraft,
  presence: PresenceDraft,
  typing: TypingDraft,
  telemetry: TelemetryDraft,
} as const satisfies Record<EventKind, TSchema>;

// Checking the variant named by `kind` gives precise messages instead of
// "expected union value".
const variantChecks = new Map(Object.entries(VARIANTS).map(([kind, schema]) => [kind, TypeCompiler.Compile(schema)]));

/** Validates untrusted input at the edge; up to 20 violations are listed in the error. */
export function parseEventDraft(input: unknown): EventDraft {
  const kind = typeof input === 'object' && input !== null ? (input as { kind?: unknown }).kind : undefined;
  const check = typeof kind === 'string' ? variantChecks.get(kind) : undefined;
  if (!check) {
    throw new SyncgateError('SG_ERR_EVENT_INVALID', `/kind must be one of ${Object.keys(VARIANTS).join(', ')}`, {
      problems: ['/kind unknown'],
    });
  }
  if (check.Check(input)) return input as EventDraft;
  const problems = [...check.Errors(input)].slice(0, 20).map((e) => `${e.path || '/'} ${e.message}`);
  throw new SyncgateError('SG_ERR_EVENT_INVALID', problems[0], { problems });
}
