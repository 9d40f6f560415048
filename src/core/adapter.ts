/**
 * The adapter port (docs/protocols.md, "What every adapter does"; docs/architecture.md, "Delivery"). An adapter turns its protocol's traffic
 * into event drafts for the ingest sink, and delivers log events to its
 * protocol when a delivery worker asks. Adapters import only src/core and
 * src/log; the bridge wires them to the log.
 */
import type { Logger } from 'pino';
import type { Content, DraftOf, EventDraft, LogEvent, Proto, Relations, TextFormat } from './event.js';
import type { ReadOptions, ReadResult, RoomLink } from './ports.js';

/** What became of an ingested draft. */
export type IngestResult =
  | { readonly status: 'appended' | 'duplicate'; readonly eventId: string; readonly cursor: string }
  /** one of ours came back (reflection, carbon, own publication): not appended; its native ids were recorded for `eventId` */
  | { readonly status: 'echo'; readonly eventId: string }
  /** not appended, with the reason (logged and counted by the sink) */
  | { readonly status: 'ignored'; readonly reason: string };

export interface IngestOptions {
  /** extra native-id lookup keys for the event (see EventLog.append) */
  readonly aliases?: readonly string[];
  /**
   * Names of origin ids that say where the event came from, not which event
   * it is (an MQTT topic): kept on the event, left out of the id map, where
   * every message of that topic would otherwise claim the same key.
   */
  readonly contextIds?: readonly string[];
}

/**
 * The adapters' way into the log. `ingest` resolves only once the event is
 * durable: acknowledge upstream after it, never before.
 */
export interface IngestSink {
  ingest(draft: EventDraft, options?: IngestOptions): Promise<IngestResult>;
  /** device data that is not chat: its own capped stream per room, never the timeline */
  ingestTelemetry(draft: DraftOf<'telemetry'>): Promise<{ readonly id: string }>;
  /** a native id / lookup key → the gateway event id, within a room */
  resolve(room: string, key: string): Promise<string | undefined>;
  getEvent(room: string, eventId: string): Promise<LogEvent | undefined>;
}

/** Native ids of the events a delivered event refers to, per relation, as this endpoint knows them. */
export type ReferenceIds = Partial<Record<keyof Relations, Readonly<Record<string, string>>>>;

export interface DeliveryTarget {
  readonly room: string;
  readonly link: RoomLink;
}

export interface DeliveryContext {
  /** how many times this event was tried before at this endpoint (0 on the first try) */
  readonly attempt: number;
  readonly references: ReferenceIds;
  /**
   * The event's content converted to the adapter's `textFormat` (sanitised
   * HTML, XEP-0393 styling, Markdown or plain), when the event has content.
   */
  readonly content?: Content;
}

export type DeliveryResult =
  /** confirmed by the protocol (XEP-0198 ack / MUC reflection, Matrix 200 + event_id, MQTT PUBACK) */
  | { readonly status: 'delivered'; readonly nativeIds: Readonly<Record<string, string>>; readonly aliases?: readonly string[] }
  /** nothing to send for this endpoint (an unsupported kind, a private receipt …) */
  | { readonly status: 'skipped'; readonly reason: string }
  /** a transient failure; try again, not before `afterMs` when given */
  | { readonly status: 'retry'; readonly reason: string; readonly afterMs?: number }
  /** a permanent failure: the event goes to the dead-letter stream */
  | { readonly status: 'rejected'; readonly reason: string };

export interface AdapterStatus {
  readonly connected: boolean;
  /** ready to deliver (joined, subscribed …) */
  readonly ready: boolean;
  readonly detail?: Readonly<Record<string, unknown>>;
  /**
   * Figures per rule (an adapter's configured mapping, e.g. an MQTT link), by
   * a rule id of bounded cardinality — never a topic or device name.
   * Exported as `syncgate_adapter_rule_stat{adapter,rule,stat}`.
   */
  readonly ruleStats?: ReadonlyArray<{ readonly rule: string; readonly stat: string; readonly value: number }>;
}

/** Which rooms a native address belongs to, and what this endpoint is linked to; follows run-time changes. */
export interface LinkView {
  roomsFor(endpoint: string, target: string): readonly string[];
  linksOf(endpoint: string): ReadonlyArray<{ readonly room: string; readonly link: RoomLink }>;
  onChange(listener: () => void): () => void;
}

export interface Adapter {
  /** the endpoint (adapter instance) name used in room links and `origin.via` */
  readonly name: string;
  /** the protocol, used to scope the native ids it reports (see nativeKey) */
  readonly protocol: Proto;
  /** the rich-text format the protocol speaks; deliveries get `context.content` in it (default plain) */
  readonly textFormat?: TextFormat | 'plain';
  /**
   * The largest message body (UTF-8 bytes) this endpoint carries whole; a
   * longer one is delivered cut with TRUNCATION_MARKER (src/core/text.ts).
   * The HTTP send answer names the linked endpoints a body exceeds. Absent:
   * whatever the log holds.
   */
  readonly maxBodyBytes?: number;
  /**
   * Connects. Called again after stop() has resolved (its replica lost the
   * connection lease and won it back), it begins a new session as a new
   * instance would: a new connection, nothing carried over that the remote
   * side may have changed meanwhile.
   */
  start(): Promise<void>;
  /** finish in-flight sends, then disconnect */
  stop(): Promise<void>;
  status(): AdapterStatus;
  deliver(event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult>;
  /**
   * Whether events that came from this endpoint are delivered back to it on
   * `link` too (an MQTT out topic mirroring the whole room). Default: never —
   * an endpoint does not get its own traffic back.
   */
  deliversOwn?(link: RoomLink): boolean;
  /**
   * Why this endpoint cannot bridge `link` (asked by the admin API before it
   * stores a room; undefined when it can or cannot tell).
   */
  checkLink?(link: RoomLink): Promise<LinkRefusal | undefined>;
  /**
   * Runs an inbound rule (a link's target and options) on a sample message,
   * appending nothing: the event draft it would ingest, or why not (the
   * console's Rules page). Only endpoints with inbound rules (MQTT) have it.
   */
  testRule?(sample: RuleSample): RuleSampleResult;
  /**
   * A file this endpoint made available to the room's other protocols under
   * an id it put in an attachment URL (GET /v1/media/{endpoint}/{id}): a
   * Matrix encrypted attachment, decrypted. Undefined when there is no such
   * file (or it may no longer be given); throws when it cannot be fetched.
   */
  media?(id: string): Promise<MediaFile | undefined>;
}

export interface MediaFile {
  readonly data: Uint8Array;
  readonly contentType: string;
  readonly name?: string;
}

export interface RuleSample {
  /** a link target, e.g. an MQTT topic filter with named wildcards */
  readonly filter: string;
  readonly options?: Readonly<Record<string, string | number | boolean>>;
  readonly topic: string;
  readonly payload: string;
  readonly room?: string;
}

export interface RuleSampleResult {
  /** the topic matched the filter */
  readonly matched: boolean;
  /** the event draft the rule would ingest */
  readonly message?: unknown;
  /** why nothing would be ingested */
  readonly error?: string;
}

/**
 * An endpoint's refusal of a link: `encrypted` is an end-to-end encrypted
 * native room the endpoint cannot bridge; `unencrypted` a room in clear where
 * the endpoint bridges encrypted rooms only.
 */
export interface LinkRefusal {
  readonly reason: 'encrypted' | 'unencrypted';
  readonly detail: string;
}

/** Read access to the timeline, for adapters that serve catch-up from a cursor (MQTT sync). */
export interface TimelineReader {
  /** events after a sync cursor (absent = the beginning) in the given rooms, oldest first */
  read(since: string | undefined, options: ReadOptions): Promise<ReadResult>;
  /** the newest `limit` events of the rooms and the sync cursor of now */
  latest(options: ReadOptions): Promise<ReadResult>;
}

export interface AdapterDeps<C> {
  readonly name: string;
  readonly config: C;
  readonly log: Logger;
  readonly sink: IngestSink;
  readonly links: LinkView;
  /** the timeline, for adapters that serve reads (given to those that need it) */
  readonly reader?: TimelineReader;
}

/**
 * The origin-id key under which an adapter reports that an inbound message
 * carries one of our event ids (XMPP origin-id, Matrix content key, MQTT
 * `sg-eid`). The sink treats a draft carrying it as an echo.
 */
export const ECHO_ID_KEY = 'sg.eventId';

/**
 * The lookup key of a native id in the id map: `<proto>:<id name>:<value>`,
 * e.g. `matrix:mx.eventId:$abc`. The sink registers one for every entry of an
 * inbound draft's `origin.ids`, the delivery engine one for every native id a
 * delivery returned; adapters resolve references with the same key.
 */
export function nativeKey(proto: Proto, name: string, value: string): string {
  return `${proto}:${name}:${value}`;
}

/** the prefix of the id-map keys the operator's trace looks native ids up by (see traceKeys) */
export const TRACE_KEY_PREFIX = 'trace:';
/** native id values longer than this are not indexed for the trace */
const TRACE_VALUE_MAX = 512;

/**
 * The id-map keys under which the operator's trace (`GET /v1/admin/trace/:id`)
 * finds an event by a native id as a person sees it, whatever protocol and id
 * name: `trace:<value>` for the value, and for a value scoped by its adapter
 * as `<scope>/<raw>` (an XMPP stanza id `<archive>/<raw>`, a client id
 * `<conversation>/<sender>/<raw>`) also the tails after its first and second
 * '/', so the raw id typed from a client is found. Written where native ids
 * are learnt (the sink for inbound ids, the delivery engine for the ids a
 * delivery returned), in the same time-bucketed id map with the same lifetime
 * as the other native-id keys, so a lookup costs the same at any depth.
 */
export function traceKeys(values: Iterable<string>): string[] {
  const keys = new Set<string>();
  for (const value of values) {
    if (value === '' || value.length > TRACE_VALUE_MAX) continue;
    keys.add(`${TRACE_KEY_PREFIX}${value}`);
    let at = -1;
    for (let tails = 0; tails < 2; tails++) {
      at = value.indexOf('/', at + 1);
      if (at < 0 || at === value.length - 1) break;
      keys.add(`${TRACE_KEY_PREFIX}${value.slice(at + 1)}`);
    }
  }
  return [...keys];
}

/**
 * An adapter's configuration or one of its room links is not valid. Every
 * problem found is listed, so the config loader and the admin API can report
 * them all at once whatever adapter raised them.
 */
export class AdapterConfigError extends Error {
  readonly problems: readonly string[];

  constructor(protocol: string, problems: readonly string[]) {
    super(`invalid ${protocol} configuration: ${problems.join('; ')}`);
    this.name = 'AdapterConfigError';
    this.problems = problems;
  }
}

/** The problems an adapter's config or link validation reported (or the error itself, for anything else). */
export function configProblems(err: unknown): string[] {
  if (err instanceof AdapterConfigError) return [...err.problems];
  return [err instanceof Error ? err.message : String(err)];
}

/** Runs a throwing link or config check: no problems when it returns, else the problems it threw (for AdapterDescriptor.linkProblems). */
export function problemsOf(check: () => unknown): string[] {
  try {
    check();
    return [];
  } catch (err) {
    return configProblems(err);
  }
}
