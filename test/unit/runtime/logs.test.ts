/**
 * Log lines as an operator reads them: each key once per line (the runtime
 * binds `adapter`, nobody adds it again), and retries at warn with the error
 * message, not a stack trace per attempt.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createDeliveryManager } from '../../../src/bridge/delivery.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { message } from '../../fixtures/events.js';
import { waitFor } from '../../harness/free-port.js';
import { TestAdapter } from '../../harness/test-adapter.js';

/** the top-level keys of a JSON line, in order, duplicates kept (JSON.parse would merge them) */
function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === '"') {
      let j = i + 1;
      while (j < line.length && line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
      const text = line.slice(i + 1, j);
      let k = j + 1;
      while (line[k] === ' ') k++;
      if (depth === 1 && line[k] === ':') keys.push(text);
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') depth++;
    if (c === '}' || c === ']') depth--;
    i++;
  }
  return keys;
}

describe('log lines', () => {
  it('a delivery retry: one warn line per attempt, `adapter` once, the reason without a stack trace', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) });
    const log = createEventLog({ partitions: 2, log: silentLogger() });
    await log.rooms.put({ id: 'ops', links: [{ endpoint: 'remote', target: 't-ops' }] });
    const adapter = new TestAdapter('remote', createIngestSink({ log, logger: silentLogger() }));
    await adapter.start();
    adapter.controls.failRooms.add('ops');
    const manager = createDeliveryManager({
      log,
      adapters: [adapter],
      links: { linksOfRoom: () => [{ endpoint: 'remote', target: 't-ops' }] },
      logger: logger.child({ module: 'delivery' }),
      options: { leaseMs: 2000, backoffBaseMs: 10, backoffMaxMs: 50 },
    });
    await manager.start();
    await log.append(message('ops', 'one'));
    const retries = () => lines.filter((l) => l.includes('delivery failed; will retry'));
    await waitFor(() => retries().length >= 2, { timeoutMs: 30_000, what: 'two retry lines' });
    adapter.controls.failRooms.clear();
    await manager.stop(1000);
    await log.close();
    for (const line of retries()) {
      const keys = topLevelKeys(line);
      expect(keys.filter((k) => k === 'adapter')).toEqual(['adapter']);
      expect(new Set(keys).size).toBe(keys.length);
      const parsed = JSON.parse(line) as { level: number; adapter: string; reason: string };
      expect(parsed.level).toBe(40);
      expect(parsed.adapter).toBe('remote');
      expect(parsed.reason).toMatch(/room ops is failing/);
      expect(line).not.toMatch(/"stack"|\\n\s+at /);
    }
    // no line of the delivery has a key twice
    for (const line of lines) {
      const keys = topLevelKeys(line);
      expect({ line, unique: new Set(keys).size === keys.length }).toEqual({ line, unique: true });
    }
  }, 60_000);
});
