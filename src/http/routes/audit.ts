/**
 * The operators' audit trail: who replayed or discarded which dead letters,
 * and when. Kept in the log's state store (so every replica and a restart
 * see it), bounded to AUDIT_MAX entries (the oldest are dropped), and read
 * with `GET /v1/admin/audit` by the admin and viewer tokens.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { Counter } from 'prom-client';
import { Type, type Static } from '@sinclair/typebox';
import type { StateStore } from '../../core/ports.js';
import { adminAuth, type AdminIdentity } from '../auth.js';
import type { HttpContext } from '../context.js';
import { errors } from '../schemas.js';

export const AUDIT_NS = 'audit:operator';
/** entries kept; older ones are dropped when a new one is written */
export const AUDIT_MAX = 1000;
/** dead-letter ids kept per entry (`count` says how many there were) */
const AUDIT_IDS_MAX = 100;

export const AuditEntry = Type.Object({
  id: Type.String({ description: 'sortable: later entries have greater ids' }),
  at: Type.Integer({ description: 'when (ms since the epoch)' }),
  by: Type.String({ description: '`admin`, or `viewer:<hash prefix>` (never the token)' }),
  role: Type.Union([Type.Literal('admin'), Type.Literal('viewer')]),
  action: Type.Union([Type.Literal('dead-letters.replay'), Type.Literal('dead-letters.drop')]),
  ids: Type.Array(Type.String(), { description: `the dead letters chosen (the first ${AUDIT_IDS_MAX})` }),
  count: Type.Integer({ description: 'how many were chosen' }),
  done: Type.Integer({ description: 'how many were replayed or discarded (the others were no longer dead letters)' }),
  selection: Type.Optional(Type.Object({ all: Type.Optional(Type.Boolean()), group: Type.Optional(Type.String()) })),
});
export type AuditEntryView = Static<typeof AuditEntry>;

export interface AuditInput {
  readonly who: AdminIdentity;
  readonly action: AuditEntryView['action'];
  readonly ids: readonly string[];
  readonly done: number;
  readonly selection?: { readonly all?: boolean; readonly group?: string };
}

let last = 0;
/** a sortable id: the time, zero-padded, then a counter within the same ms and a random tail (replicas) */
function auditId(now: number): string {
  last = now > last ? now * 1000 : last + 1;
  return `${last.toString().padStart(17, '0')}-${randomBytes(3).toString('hex')}`;
}

/** The entry for an action, with its id and time fixed (a retried write writes the same entry). */
export function auditEntry(input: AuditInput, now = Date.now()): AuditEntryView {
  return {
    id: auditId(now),
    at: now,
    by: input.who.name,
    role: input.who.role,
    action: input.action,
    ids: input.ids.slice(0, AUDIT_IDS_MAX),
    count: input.ids.length,
    done: input.done,
    ...(input.selection && (input.selection.all !== undefined || input.selection.group !== undefined) ? { selection: { ...input.selection } } : {}),
  };
}

/** Writes an entry, then drops the oldest entries past `max`; a failed drop is left for the next write. */
export async function writeAudit(state: StateStore, entry: AuditEntryView, max = AUDIT_MAX): Promise<void> {
  await state.set(AUDIT_NS, entry.id, JSON.stringify(entry));
  try {
    const keys = (await state.entries(AUDIT_NS)).map(([k]) => k).sort();
    const excess = keys.length - max;
    for (const k of keys.slice(0, Math.max(0, excess))) await state.delete(AUDIT_NS, k);
  } catch {
    // the entry is written; the trail is trimmed again by the next write
  }
}

/** Records an action, then drops the oldest entries past `max` (AUDIT_MAX). */
export async function recordAudit(state: StateStore, input: AuditInput, options: { readonly now?: number; readonly max?: number } = {}): Promise<AuditEntryView> {
  const entry = auditEntry(input, options.now);
  await writeAudit(state, entry, options.max);
  return entry;
}

/** what an action's answer says about its audit entry */
export const AuditOutcome = Type.Object(
  {
    recorded: Type.Boolean({ description: 'the audit entry is written' }),
    retrying: Type.Optional(Type.Boolean({ description: 'not written yet: the gateway keeps trying in the background (see the log and syncgate_audit_write_failures_total)' })),
    error: Type.Optional(Type.String({ description: 'why the audit write failed' })),
  },
  { description: 'The action was done either way; this says whether its audit entry was written.' },
);
export type AuditOutcomeView = Static<typeof AuditOutcome>;

/** background audit retries: every AUDIT_RETRY_MS, up to AUDIT_RETRIES times (about a minute) */
export const AUDIT_RETRY_MS = 2000;
export const AUDIT_RETRIES = 30;

export interface AuditWriter {
  /**
   * Records an action that has been done. Never throws: a failed write is
   * tried once more at once, then logged, counted and retried in the
   * background; the outcome goes into the action's answer.
   */
  record(input: AuditInput, log: FastifyBaseLogger): Promise<AuditOutcomeView>;
}

/** One per app: the failure counter on the app's registry, background retries stopped when the app closes. */
export function createAuditWriter(app: FastifyInstance, ctx: HttpContext): AuditWriter {
  const failures = new Counter({
    name: 'syncgate_audit_write_failures_total',
    help: 'Audit entries (dead letters replayed or discarded) whose write failed after the action was done, by action; each failed attempt counts',
    labelNames: ['action'],
    registers: [ctx.registry],
  });
  const timers = new Set<NodeJS.Timeout>();
  app.addHook('onClose', async () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
  });
  const tryWrite = async (entry: AuditEntryView): Promise<string | undefined> => {
    try {
      await writeAudit(ctx.log.state, entry);
      return undefined;
    } catch (err) {
      failures.inc({ action: entry.action });
      return err instanceof Error ? err.message : String(err);
    }
  };
  const retryLater = (entry: AuditEntryView, log: FastifyBaseLogger, left: number): void => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      void tryWrite(entry).then((error) => {
        if (error === undefined) log.info({ audit: entry.action, auditId: entry.id }, 'audit entry written by a retry');
        else if (left > 1) retryLater(entry, log, left - 1);
        else log.error({ audit: entry, error }, 'audit entry NOT written: gave up retrying; the action above was done');
      });
    }, AUDIT_RETRY_MS);
    timer.unref();
    timers.add(timer);
  };
  return {
    async record(input, log) {
      const entry = auditEntry(input);
      let error = await tryWrite(entry);
      if (error !== undefined) error = await tryWrite(entry);
      if (error === undefined) return { recorded: true };
      // the action is done and answered as such; the entry (with who, what, when) is in this log line whatever happens
      log.error({ audit: entry, error }, 'audit entry not written after the action was done; retrying in the background');
      retryLater(entry, log, AUDIT_RETRIES);
      return { recorded: false, retrying: true, error };
    },
  };
}

/** The entries, newest first. */
export async function readAudit(state: StateStore): Promise<AuditEntryView[]> {
  const out: AuditEntryView[] = [];
  for (const [, raw] of await state.entries(AUDIT_NS)) {
    try {
      out.push(JSON.parse(raw) as AuditEntryView);
    } catch {
      // a damaged entry is left out rather than failing the page
    }
  }
  return out.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

const AuditQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: AUDIT_MAX, default: 100 }),
    before: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'the `id` of the last entry of the previous page' })),
    action: Type.Optional(AuditEntry.properties.action),
  },
  { additionalProperties: false },
);

export function registerAuditRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const onRequest = adminAuth(ctx.config.adminToken, { viewerTokens: ctx.config.viewerTokens ?? [] });
  app.get<{ Querystring: Static<typeof AuditQuery> }>(
    '/v1/admin/audit',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        security: [{ bearer: [] }],
        summary: "The operators' audit trail: dead letters replayed or discarded, by whom and when, newest first",
        description: `Kept in the event log's state (every replica sees it), the newest ${AUDIT_MAX}. Page with \`before\` = the last \`id\` seen.`,
        querystring: AuditQuery,
        response: { 200: Type.Object({ entries: Type.Array(AuditEntry), next: Type.Optional(Type.String()) }), ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const { limit, before, action } = request.query;
      const all = (await readAudit(ctx.log.state)).filter((e) => (before === undefined || e.id < before) && (action === undefined || e.action === action));
      const entries = all.slice(0, limit);
      const lastEntry = entries.at(-1);
      return { entries, ...(all.length > limit && lastEntry ? { next: lastEntry.id } : {}) };
    },
  );
}
