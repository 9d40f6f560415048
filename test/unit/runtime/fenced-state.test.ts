/**
 * Fenced adapter state (issue 22 point 2, issue 26): the sealed store an
 * adapter is handed writes under its supervisor's lease token, so a former
 * holder that resumes after another replica took the connection over cannot
 * write its stale records into the new holder's state; the refusal stops its
 * session. In process, on the memory log: the takeover is a lease taken from
 * a holder the new one sees as gone (the `reclaim` path), with no waiting.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Adapter, AdapterStatus } from '../../../src/core/adapter.js';
import { isSyncgateError } from '../../../src/core/errors.js';
import { FENCE_FIELD, type EventLog, type SealedStore } from '../../../src/core/ports.js';
import type { DeliveryManager } from '../../../src/bridge/delivery.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { LeaseFence } from '../../../src/runtime/lease-fence.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import { AdapterSupervisor } from '../../../src/runtime/supervisor.js';

const NS = 'matrix-crypto:mx';
const SECRET = 'a long operator secret';
const text = (v: Uint8Array | undefined) => (v === undefined ? undefined : Buffer.from(v).toString());
const bytes = (t: string) => new Uint8Array(Buffer.from(t));

async function refusedCode(run: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await run();
    return undefined;
  } catch (err) {
    return isSyncgateError(err) ? err.code : String(err);
  }
}

const logs: EventLog[] = [];
afterEach(async () => {
  for (const log of logs.splice(0)) await log.close();
});

/** One replica: a supervisor over an adapter that reads its sealed state at start, as the Matrix crypto store does. */
function replica(log: EventLog, owner: string, reclaim?: (holder: string) => boolean) {
  const fence = new LeaseFence();
  const sealed = (): SealedStore => createSealedStore(log.state, NS, SECRET, fence);
  let store: SealedStore | undefined;
  let loaded: Array<[string, string | undefined]> = [];
  let stops = 0;
  const adapter = {
    name: 'mx',
    protocol: 'matrix',
    start: async () => {
      store = sealed();
      loaded = (await store.entries()).map(([k, v]) => [k, text(v)]);
    },
    stop: async () => void (stops += 1),
    status: (): AdapterStatus => ({ connected: true, ready: true }),
  } as unknown as Adapter;
  const delivery: DeliveryManager = { owner, start: async () => undefined, stop: async () => undefined, leases: () => ({}) };
  const supervisor = new AdapterSupervisor({ adapter, delivery, queue: log.delivery, owner, leaseMs: 600_000, logger: silentLogger(), graceMs: 10, fence, ...(reclaim ? { reclaim } : {}) });
  return {
    supervisor,
    fence,
    tick: (): Promise<void> => supervisor['tick'](),
    settled: (): Promise<void> => supervisor['transition'],
    store: () => store!,
    loaded: () => loaded,
    stops: () => stops,
  };
}

describe('fenced adapter state', () => {
  it('a former holder resumed after a takeover has its writes refused, the new holder\'s state unchanged, and its session stopped', async () => {
    const log = createEventLog({ partitions: 1, log: silentLogger() });
    logs.push(log);
    const a = replica(log, 'a#1#aa');
    await a.tick();
    expect(a.supervisor.current).toBe('active');
    await a.store().update([['olm', bytes('a1')], ['megolm', bytes('a1')]], []);

    // A is paused past its lease; B takes the connection over and reads what A wrote last
    const b = replica(log, 'b#2#bb', (holder) => holder === 'a#1#aa');
    await b.tick();
    expect(b.supervisor.current).toBe('active');
    expect(b.loaded().sort()).toEqual([['megolm', 'a1'], ['olm', 'a1']]);
    expect(b.fence.current).toBeGreaterThan(a.fence.current ?? Infinity);
    await b.store().update([['olm', bytes('b1')], ['otk', bytes('b1')]], ['megolm']);
    const before = (await log.state.entries(NS)).sort();

    // A resumes before its supervisor noticed: its stale records are refused, whatever the call
    expect(await refusedCode(() => a.store().update([['olm', bytes('a2')], ['megolm', bytes('a2')]], ['otk']))).toBe('SG_ERR_STATE_FENCED');
    expect(await refusedCode(() => a.store().set('olm', bytes('a3')))).toBe('SG_ERR_STATE_FENCED');
    expect(await refusedCode(() => a.store().delete('otk'))).toBe('SG_ERR_STATE_FENCED');
    expect((await log.state.entries(NS)).sort()).toEqual(before);
    // the refusal stopped A's session; A stands by (B holds the lease), and stays so on its next renewal
    await a.settled();
    expect(a.supervisor.current).toBe('standby');
    expect(a.stops()).toBe(1);
    expect(a.fence.current).toBeUndefined();
    await a.tick();
    expect(a.supervisor.current).toBe('standby');

    // B goes on; what it reads after a restart is its own state
    await b.store().set('megolm', bytes('b2'));
    const again = createSealedStore(log.state, NS, SECRET, b.fence);
    expect((await again.entries()).map(([k, v]) => [k, text(v)]).sort()).toEqual([['megolm', 'b2'], ['olm', 'b1'], ['otk', 'b1']]);
  });

  it('a former holder that claims late (paused between taking the lease and reading) cannot undo a newer holder\'s claim', async () => {
    const log = createEventLog({ partitions: 1, log: silentLogger() });
    logs.push(log);
    const ttl = 600_000;
    await log.delivery.acquireLease(0, 'conn:mx', 'a#1#aa', ttl);
    const tokenA = (await log.delivery.leaseToken(0, 'conn:mx', 'a#1#aa'))!;
    await log.delivery.acquireLease(0, 'conn:mx', 'b#2#bb', ttl, (holder) => holder === 'a#1#aa');
    const fenceB = new LeaseFence();
    fenceB.hold((await log.delivery.leaseToken(0, 'conn:mx', 'b#2#bb'))!);
    const storeB = createSealedStore(log.state, NS, SECRET, fenceB);
    await storeB.set('olm', bytes('b1'));
    // A only now reads (claims) with its older token
    const fenceA = new LeaseFence();
    fenceA.hold(tokenA);
    let refusals = 0;
    fenceA.onRefused(() => (refusals += 1));
    expect(await refusedCode(() => createSealedStore(log.state, NS, SECRET, fenceA).entries())).toBe('SG_ERR_STATE_FENCED');
    expect(refusals).toBe(1);
    expect(text(await storeB.get('olm'))).toBe('b1');
  });

  it('writes with no lease token held are refused; the token field is never taken for a sealed value', async () => {
    const log = createEventLog({ partitions: 1, log: silentLogger() });
    logs.push(log);
    const fence = new LeaseFence();
    const store = createSealedStore(log.state, NS, SECRET, fence);
    expect(await refusedCode(() => store.set('k', bytes('v')))).toBe('SG_ERR_STATE_FENCED');
    expect(await log.state.entries(NS)).toEqual([]);
    // reads need no token (nothing is claimed without one)
    expect(await store.entries()).toEqual([]);
    fence.hold(5);
    await store.set('k', bytes('v'));
    expect(await log.state.get(NS, FENCE_FIELD)).toBe('5');
    expect((await store.entries()).map(([k, v]) => [k, text(v)])).toEqual([['k', 'v']]);
    // an unfenced store of the same namespace (an operator's command) reads it too
    expect((await createSealedStore(log.state, NS, SECRET).entries()).map(([k]) => k)).toEqual(['k']);
  });
});
