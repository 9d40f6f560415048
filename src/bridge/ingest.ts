/**
 * The ingest sink: where every adapter's drafts enter the log.
 *
 * - Echoes are dropped before append: a draft that carries one of our event
 *   ids (ECHO_ID_KEY) or comes from one of our puppets. For an echo that
 *   names our event, its native ids become aliases of that event — this is
 *   how a MUC reflection's stanza-id reaches the id map.
 * - Relations are normalised: an edit of an edit points at the original.
 * - The promise resolves only after the append is durable.
 */
import type { Logger } from 'pino';
import { ECHO_ID_KEY, nativeKey, traceKeys, type IngestOptions, type IngestResult, type IngestSink } from '../core/adapter.js';
import type { EventDraft } from '../core/event.js';
import { isSyncgateError } from '../core/errors.js';
import type { AppendResult, EventLog } from '../core/ports.js';
import { sanitizeHtml } from './format/index.js';

export interface IngestCounters {
  appended: number;
  duplicate: number;
  echo: number;
  ignored: number;
}

export interface BridgeSink extends IngestSink {
  readonly counters: Readonly<Record<string, IngestCounters>>;
}

/**
 * Lookup keys for a draft's native ids (see nativeKey), leaving out our own
 * id and the context ids, followed by their trace keys (see traceKeys).
 */
export function nativeKeys(draft: Pick<EventDraft, 'origin'>, contextIds: readonly string[] = []): string[] {
  const keys: string[] = [];
  const values: string[] = [];
  for (const name in draft.origin.ids) {
    const value = draft.origin.ids[name];
    if (value === undefined || name === ECHO_ID_KEY || contextIds.includes(name)) continue;
    keys.push(nativeKey(draft.origin.proto, name, value));
    values.push(value);
  }
  return values.length === 0 ? keys : [...keys, ...traceKeys(values)];
}

/** An appended (or duplicate) result that reads the id and cursor through: they are only worked out if the adapter asks. */
class Ingested {
  readonly status: 'appended' | 'duplicate';
  constructor(private readonly result: AppendResult) {
    this.status = result.duplicate ? 'duplicate' : 'appended';
  }
  get eventId(): string {
    return this.result.eventId;
  }
  get cursor(): string {
    return this.result.cursor;
  }
}

export interface IngestSinkDeps {
  readonly log: EventLog;
  readonly logger: Logger;
  /** told of each event appended (not duplicates): the per-link rates count it (in memory, no I/O) */
  readonly onAppended?: (via: string, room: string) => void;
}

export function createIngestSink(deps: IngestSinkDeps): BridgeSink {
  const { log, logger } = deps;
  const counters: Record<string, IngestCounters> = {};
  const count = (via: string, what: keyof IngestCounters) => {
    const c = (counters[via] ??= { appended: 0, duplicate: 0, echo: 0, ignored: 0 });
    c[what]++;
  };

  /** Inbound HTML is sanitised once, here, whatever adapter it came from. */
  function sanitiseContent(draft: EventDraft): EventDraft {
    if (!('content' in draft) || draft.content.format !== 'html' || draft.content.formatted === undefined) return draft;
    const clean = sanitizeHtml(draft.content.formatted);
    if (clean === draft.content.formatted) return draft;
    logger.debug({ room: draft.room, via: draft.origin.via }, 'inbound HTML sanitised');
    return { ...draft, content: { ...draft.content, formatted: clean } } as EventDraft;
  }

  function withoutEchoId(draft: EventDraft): EventDraft {
    const { [ECHO_ID_KEY]: _drop, ...ids } = draft.origin.ids;
    return { ...draft, origin: { ...draft.origin, ids } } as EventDraft;
  }

  /** An edit always replaces the original, never an earlier edit (Matrix forbids it; XEP-0308 says the same). */
  async function normaliseRelations(draft: EventDraft): Promise<EventDraft> {
    if (draft.kind !== 'edit') return draft;
    const target = await log.getEvent(draft.room, draft.rel.replaces);
    if (target?.kind === 'edit') return { ...draft, rel: { replaces: target.rel.replaces } };
    return draft;
  }

  const sink: BridgeSink = {
    counters,
    resolve: (room, key) => log.resolve(room, key),
    ingestTelemetry: (draft) => log.appendTelemetry(draft),
    getEvent: (room, eventId) => log.getEvent(room, eventId),

    ingest(input, options = {}): Promise<IngestResult> {
      // The common case (no echo marker, no puppet, not an edit) waits for nothing before its append and
      // adds one step after it: no async layer of its own, on every adapter's per-message path.
      if (input.origin.ids[ECHO_ID_KEY] !== undefined || input.sender.puppet || input.kind === 'edit') return ingestWithLookups(input, options);
      return appendDraft(input, input, options);
    },
  };

  async function ingestWithLookups(input: EventDraft, options: IngestOptions): Promise<IngestResult> {
    const via = input.origin.via;
    const ours = input.origin.ids[ECHO_ID_KEY];
    if (ours !== undefined) {
      const original = await log.getEvent(input.room, ours).catch(() => undefined);
      if (original) {
        const aliases = nativeKeys(input, options.contextIds);
        if (aliases.length > 0) await log.alias(input.room, original.eventId, aliases);
        count(via, 'echo');
        return { status: 'echo', eventId: original.eventId };
      }
      // Claims to be ours but is not in this room: not trusted as an echo marker.
      logger.debug({ room: input.room, claimed: ours, via }, 'unknown gateway event id on inbound message; ingesting it as new');
    }
    if (input.sender.puppet) {
      count(via, 'echo');
      return { status: 'ignored', reason: 'sent by one of our puppets' };
    }
    let draft: EventDraft;
    try {
      // Only an edit needs a lookup first.
      draft = input.kind === 'edit' ? await normaliseRelations(input) : input;
    } catch (err) {
      return refused(input, err);
    }
    return appendDraft(input, draft, options);
  }

  /** Appends `draft` (`input` after its lookups); resolves when the append is durable. */
  function appendDraft(input: EventDraft, draft: EventDraft, options: IngestOptions): Promise<IngestResult> {
    let appending: Promise<AppendResult>;
    try {
      const sanitised = sanitiseContent(draft);
      const clean = ECHO_ID_KEY in sanitised.origin.ids ? withoutEchoId(sanitised) : sanitised;
      const own = nativeKeys(clean, options.contextIds);
      const aliases = options.aliases === undefined || options.aliases.length === 0 ? own : own.length === 0 ? options.aliases : [...options.aliases, ...own];
      appending = log.append(clean, { aliases });
    } catch (err) {
      try {
        return Promise.resolve(refused(input, err));
      } catch (thrown) {
        return Promise.reject(thrown);
      }
    }
    const via = input.origin.via;
    return appending.then(
      (result) => {
        const ingested = new Ingested(result);
        count(via, ingested.status);
        if (ingested.status === 'appended') deps.onAppended?.(via, input.room);
        return ingested;
      },
      (err: unknown) => refused(input, err),
    );
  }

  /** An event the log refuses (invalid, or its room unknown) is ignored and counted; any other error is thrown on. */
  function refused(input: EventDraft, err: unknown): IngestResult {
    if (isSyncgateError(err, 'SG_ERR_EVENT_INVALID') || isSyncgateError(err, 'SG_ERR_ROOM_UNKNOWN')) {
      count(input.origin.via, 'ignored');
      logger.warn({ room: input.room, via: input.origin.via, code: err.code, reason: err.message }, 'inbound event rejected');
      return { status: 'ignored', reason: `${err.code}: ${err.message}` };
    }
    throw err;
  }

  return sink;
}
