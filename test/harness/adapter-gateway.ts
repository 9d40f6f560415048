/**
 * What the adapter integration tests (test/integration/mqtt, test/integration/xmpp)
 * build an adapter on: a log (memory, or the test Redis under a fresh prefix)
 * with the real ingest sink and room links, a debug logger whose JSON lines are
 * kept for assertions, reading the log back, and condition waits.
 */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { inject } from 'vitest';
import type { LogEvent } from '../../src/core/event.js';
import type { EventLog, RoomLink } from '../../src/core/ports.js';
import { createIngestSink, type BridgeSink } from '../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { waitFor } from './free-port.js';
import { testPrefix } from './redis.js';

export const DEADLINE_MS = 15_000;

export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = DEADLINE_MS): Promise<void> {
  await waitFor(check, { what, timeoutMs, intervalMs: 20 });
}

export interface Gateway {
  readonly log: EventLog;
  readonly sink: BridgeSink;
  readonly links: RoomLinks;
  readonly logger: Logger;
  /** lines the adapters logged (JSON objects) */
  readonly logLines: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export interface GatewayOptions {
  /** `redis`: the test Redis (or `redisUrl`) under `prefix`, by default a fresh one. Default `memory`. */
  readonly backend?: 'memory' | 'redis';
  readonly redisUrl?: string;
  readonly prefix?: string;
  /** rooms put in the log before the links are read */
  readonly rooms?: Array<{ id: string; links: RoomLink[] }>;
}

/** A log with the real sink and links; `prefixName` names the fresh Redis prefix (`testPrefix`). */
export async function createAdapterGateway(options: GatewayOptions, prefixName: string): Promise<Gateway> {
  const log = createEventLog({
    partitions: 4,
    log: silentLogger(),
    ...(options.backend === 'redis' ? { redis: { url: options.redisUrl ?? inject('redisUrl'), prefix: options.prefix ?? testPrefix(prefixName) } } : {}),
  });
  for (const room of options.rooms ?? []) await log.rooms.put(room);
  const logLines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logLines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const logger = pino({ level: 'debug' }, destination);
  const sink = createIngestSink({ log, logger: silentLogger() });
  const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
  return {
    log,
    sink,
    links,
    logger,
    logLines,
    async close() {
      links.close();
      await log.close();
    },
  };
}

/** Every timeline event of the given rooms, oldest first. */
export async function allEvents(log: EventLog, rooms?: string[]): Promise<LogEvent[]> {
  const out: LogEvent[] = [];
  let since: string | undefined;
  for (;;) {
    const page = await log.read(since, { rooms: rooms ? new Set(rooms) : 'all', limit: 1000 });
    out.push(...page.events);
    if (page.events.length === 0) return out;
    since = page.next;
  }
}
