/**
 * Catch-up from a cursor over MQTT (MQTT 5 request/response): pure parts.
 *
 * A device publishes `{since?, limit?, rooms?}` on the sync topic under its
 * own name (the topic's named wildcard, as for ingest: trustworthy only with
 * broker ACLs), with a Response Topic and Correlation Data. The answer is a
 * page, `{v, events, next, limited}`, or `{v, error: {code, message}}`,
 * on the response topic with the same correlation data.
 */
import type { ErrorCode } from '../../src/core/errors.js';
import type { LogEvent } from '../../src/core/event.js';
import type { MqttAdapterConfig } from './config.js';
import { eventBody } from './render.js';
import { parseNamedFilter, type NamedFilter } from './topics.js';

export const SYNC_CONTENT_TYPE = 'application/vnd.syncgate.sync+json;v=1';
export const ERROR_PROPERTY = 'sg-error';

export type SyncConfig = NonNullable<MqttAdapterConfig['sync']>;

export interface SyncService {
  readonly config: SyncConfig;
  readonly filter: NamedFilter;
  readonly grants: ReadonlyArray<{ readonly pattern: RegExp; readonly rooms: readonly string[] }>;
}

/** Compiles the sync section; throws an Error listing the problems. */
export function compileSync(config: SyncConfig): SyncService {
  const problems: string[] = [];
  let filter: NamedFilter | undefined;
  try {
    filter = parseNamedFilter(config.topic);
    if (!filter.names.includes(config.sender)) problems.push(`sync.topic: has no wildcard +${config.sender} naming the device`);
  } catch (err) {
    problems.push(`sync.topic: ${(err as Error).message}`);
  }
  const grants = config.grants.flatMap((g, i) => {
    try {
      return [{ pattern: new RegExp(g.pattern), rooms: g.rooms }];
    } catch (err) {
      problems.push(`sync.grants[${i}].pattern: ${(err as Error).message}`);
      return [];
    }
  });
  if (config.defaultLimit > config.maxLimit) problems.push('sync.defaultLimit: must be <= maxLimit');
  if (problems.length > 0 || !filter) throw new Error(problems.join('; '));
  return { config, filter, grants };
}

/** The rooms a device may read: the union of the grants whose pattern matches its name. */
export function grantedRooms(service: SyncService, device: string): Set<string> {
  const rooms = new Set<string>();
  for (const g of service.grants) if (g.pattern.test(device)) for (const r of g.rooms) rooms.add(r);
  return rooms;
}

export class SyncRequestError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SyncRequestError';
  }
}

export interface SyncRequest {
  readonly since: string | undefined;
  readonly limit: number;
  /** the rooms asked for; undefined = every granted room */
  readonly rooms: readonly string[] | undefined;
}

/** Parses a request payload (empty = `{}`); throws SyncRequestError. */
export function parseSyncRequest(payload: Buffer, service: SyncService): SyncRequest {
  let body: unknown = {};
  if (payload.length > 0) {
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      throw new SyncRequestError('SG_ERR_REQUEST_INVALID', 'the request is not JSON');
    }
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new SyncRequestError('SG_ERR_REQUEST_INVALID', 'the request must be a JSON object');
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) if (key !== 'since' && key !== 'limit' && key !== 'rooms') throw new SyncRequestError('SG_ERR_REQUEST_INVALID', `unknown field ${key.slice(0, 64)}`);
  const { since, limit = service.config.defaultLimit, rooms } = b;
  if (since !== undefined && typeof since !== 'string') throw new SyncRequestError('SG_ERR_CURSOR_INVALID', 'since must be a sync cursor (a string)');
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > service.config.maxLimit) {
    throw new SyncRequestError('SG_ERR_PARAM_INVALID', `limit must be an integer in 1..${service.config.maxLimit}`);
  }
  if (rooms !== undefined && (!Array.isArray(rooms) || rooms.length > 1000 || !rooms.every((r) => typeof r === 'string'))) {
    throw new SyncRequestError('SG_ERR_REQUEST_INVALID', 'rooms must be a list of room ids');
  }
  return { since, limit, rooms: rooms as string[] | undefined };
}

/** A page: the events, the sync cursor to ask from next, and `limited` (retention removed events after `since`). Ask again until `events` is empty. */
export function syncPage(events: readonly LogEvent[], next: string, limited: boolean): string {
  return JSON.stringify({ v: 1, events: events.map((e) => eventBody(e)), next, limited });
}

export function syncError(code: ErrorCode, message: string): string {
  return JSON.stringify({ v: 1, error: { code, message } });
}
