/**
 * The operators' audit trail in the log's state store (issue 25), on a real
 * Redis: entries newest first with who, what and when, bounded (the oldest
 * dropped), seen by another log instance over the same Redis (a replica).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEventLog } from '../../../src/eventlog/index.js';
import type { EventLog } from '../../../src/core/ports.js';
import { silentLogger } from '../../../src/log/index.js';
import { AUDIT_MAX, readAudit, recordAudit } from '../../../src/http/routes/audit.js';
import { testPrefix } from '../../harness/redis.js';

let a: EventLog;
let b: EventLog;

beforeAll(() => {
  const prefix = testPrefix('audit');
  const open = () => createEventLog({ partitions: 4, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
  a = open();
  b = open();
});

afterAll(async () => {
  await a?.close();
  await b?.close();
});

describe('audit trail', () => {
  it('keeps who did what and when, newest first, the newest `max` only, for every replica', async () => {
    const admin = { role: 'admin' as const, name: 'admin' };
    const t0 = 1_800_000_000_000;
    for (let i = 0; i < 8; i++) {
      await recordAudit(a.state, { who: admin, action: i % 2 === 0 ? 'dead-letters.replay' : 'dead-letters.drop', ids: [`0:${i}-0`], done: 1 }, { now: t0 + i, max: 5 });
    }
    const seen = await readAudit(b.state);
    expect(seen.map((e) => e.ids[0])).toEqual(['0:7-0', '0:6-0', '0:5-0', '0:4-0', '0:3-0']);
    expect(seen[0]).toMatchObject({ at: t0 + 7, by: 'admin', role: 'admin', action: 'dead-letters.drop', count: 1, done: 1 });
    // entries in the same millisecond still sort in the order written
    await recordAudit(a.state, { who: admin, action: 'dead-letters.replay', ids: ['1:1-0'], done: 0 }, { now: t0 + 7, max: 5 });
    expect((await readAudit(b.state))[0]?.ids).toEqual(['1:1-0']);
    expect(AUDIT_MAX).toBe(1000);
  });

  it('keeps at most 100 ids of a large selection, with their count', async () => {
    const ids = Array.from({ length: 250 }, (_, i) => `2:${i}-0`);
    const e = await recordAudit(a.state, { who: { role: 'admin', name: 'admin' }, action: 'dead-letters.drop', ids, done: 250, selection: { all: true } });
    expect(e.ids).toHaveLength(100);
    expect(e).toMatchObject({ count: 250, selection: { all: true } });
  });
});
