import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Adapter, AdapterStatus } from '../../../src/core/adapter.js';
import type { DeliveryQueue } from '../../../src/core/ports.js';
import type { DeliveryManager } from '../../../src/bridge/delivery.js';
import { silentLogger } from '../../../src/log/index.js';
import { AdapterSupervisor } from '../../../src/runtime/supervisor.js';

const LEASE_MS = 1_000;

function world() {
  const calls: string[] = [];
  const adapter = {
    name: 'x',
    protocol: 'xmpp',
    start: async () => void calls.push('adapter.start'),
    stop: async () => void calls.push('adapter.stop'),
    status: (): AdapterStatus => ({ connected: true, ready: true }) as AdapterStatus,
  } as unknown as Adapter;
  const delivery: DeliveryManager = {
    owner: 'a',
    start: async () => void calls.push('delivery.start'),
    stop: async () => void calls.push('delivery.stop'),
    leases: () => ({}),
  };
  let held = true;
  const queue = {
    acquireLease: async () => held,
    releaseLease: async () => undefined,
  } as unknown as DeliveryQueue;
  const supervisor = new AdapterSupervisor({ adapter, delivery, queue, owner: 'a', leaseMs: LEASE_MS, logger: silentLogger(), graceMs: 10 });
  // the private renewal step, driven by hand instead of by its timer
  const tick = (): Promise<void> => supervisor['tick']();
  return { calls, supervisor, tick, setHeld: (h: boolean) => (held = h) };
}

describe('adapter supervisor', () => {
  afterEach(() => vi.restoreAllMocks());

  it('renewals within the lease time keep the adapter running', async () => {
    const w = world();
    let now = 1_000_000;
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    await w.tick();
    expect(w.supervisor.current).toBe('active');
    for (let i = 0; i < 5; i++) {
      now += LEASE_MS / 3;
      await w.tick();
    }
    expect(w.calls).toEqual(['delivery.start', 'adapter.start']);
  });

  it('a lease that lapsed between two renewals (paused, cut off) starts the adapter again: another replica may have held it meanwhile', async () => {
    const w = world();
    let now = 1_000_000;
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    await w.tick();
    expect(w.calls).toEqual(['delivery.start', 'adapter.start']);
    // paused past the lease; the lease is free again when it resumes, so the renewal "succeeds"
    now += LEASE_MS * 5;
    await w.tick();
    expect(w.calls).toEqual(['delivery.start', 'adapter.start', 'delivery.stop', 'adapter.stop', 'delivery.start', 'adapter.start']);
    expect(w.supervisor.current).toBe('active');
  });

  it('a lease lost to another replica stops the adapter', async () => {
    const w = world();
    await w.tick();
    w.setHeld(false);
    await w.tick();
    expect(w.supervisor.current).toBe('standby');
    expect(w.calls.slice(-2)).toEqual(['delivery.stop', 'adapter.stop']);
  });
});

describe('adapter supervisor: a slow start', () => {
  afterEach(() => vi.restoreAllMocks());

  it('an adapter start that takes longer than the lease is not taken for a lapse', async () => {
    const w = world();
    let now = 1_000_000;
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    const slow = w.supervisor['deps'].adapter;
    const start = slow.start.bind(slow);
    slow.start = async () => {
      now += LEASE_MS * 3;
      await start();
    };
    await w.tick();
    now += LEASE_MS / 3;
    await w.tick();
    expect(w.calls).toEqual(['delivery.start', 'adapter.start']);
  });
});
