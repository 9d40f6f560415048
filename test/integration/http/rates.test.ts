/**
 * Events in and out per second per adapter and per link, for the whole
 * deployment (issue 25): two replicas on one Redis, each ingesting from the
 * adapter into its own room (and one room from both), the API sending into
 * a room the adapter delivers to. Either replica's status and lag show every
 * link's rates, its own and the other's; counted in memory on the hot path
 * and published with the replica record.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { waitFor } from '../../harness/free-port.js';
import { TestAdapter } from '../../harness/test-adapter.js';
import { testPrefix } from '../../harness/redis.js';
import { message } from '../../fixtures/events.js';
import { RateMeter, sumRates } from '../../../src/runtime/rates.js';

interface Rate {
  inPerSecond: number;
  outPerSecond: number;
}
interface LinkRate extends Rate {
  room: string;
  endpoint: string;
}
interface Status {
  adapters: Record<string, { rates?: Rate; replicaRates?: Rate }>;
  linkRates?: LinkRate[];
}
interface LagAnswer {
  links: Array<{ room: string; endpoint: string; inPerSecond?: number; outPerSecond?: number }>;
}

const replicas: TestGateway[] = [];
const remotes: TestAdapter[] = [];

beforeAll(async () => {
  const prefix = testPrefix('rates');
  for (let i = 0; i < 2; i++) {
    replicas.push(
      await startGateway({
        redisUrl: inject('redisUrl'),
        prefix,
        extraAdapters: ({ sink }) => {
          const remote = new TestAdapter('remote', sink);
          remotes[i] = remote;
          return [remote];
        },
      }),
    );
  }
  const [a] = replicas;
  if (!a) throw new Error('no replica');
  for (const room of ['only-a', 'only-b', 'both', 'out']) {
    expect((await a.admin('PUT', `/v1/admin/rooms/${room}`, { links: [{ endpoint: 'remote', target: `${room}@remote` }] })).status).toBe(200);
  }
}, 60_000);

afterAll(async () => {
  for (const r of replicas) await r.stop();
});

const from = (room: string, body: string) => ({
  ...message(room, body),
  sender: { uid: 'remote:bob', proto: 'xmpp' as const, native: 'bob@remote', display: 'Bob', auth: 'server' as const },
  origin: { proto: 'xmpp' as const, via: 'remote', ids: { 'xmpp.id': `${room}/${body}/${Math.random().toString(36).slice(2)}` } },
});

describe('rates per adapter and per link, all replicas', () => {
  it('shows on each replica the links ingested on the other, and the deliveries out', async () => {
    const [a, b] = replicas;
    const [remoteA, remoteB] = remotes;
    if (!a || !b || !remoteA || !remoteB) throw new Error('no replicas');
    let running = true;
    let n = 0;
    // steady traffic until the rates are seen (a rate is over the last ~10 s)
    const traffic = (async () => {
      while (running) {
        n++;
        await remoteA.receive(from('only-a', `a${n}`));
        await remoteB.receive(from('only-b', `b${n}`));
        await remoteA.receive(from('both', `ba${n}`));
        await remoteB.receive(from('both', `bb${n}`));
        await a.gateway.log.append(message('out', `o${n}`));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const linkOf = (s: Status, room: string) => s.linkRates?.find((l) => l.room === room && l.endpoint === 'remote');
    try {
      for (const [name, gw] of [['a', a], ['b', b]] as const) {
        await waitFor(
          async () => {
            const s = (await gw.admin<Status>('GET', '/v1/admin/status')).body;
            const lag = (await gw.admin<LagAnswer>('GET', '/v1/admin/lag')).body;
            const lagOf = (room: string) => lag.links.find((l) => l.room === room && l.endpoint === 'remote');
            const deployment = s.adapters['remote']?.rates?.inPerSecond ?? 0;
            const own = s.adapters['remote']?.replicaRates?.inPerSecond ?? 0;
            return (
              (linkOf(s, 'only-a')?.inPerSecond ?? 0) > 0 &&
              (linkOf(s, 'only-b')?.inPerSecond ?? 0) > 0 &&
              (linkOf(s, 'both')?.inPerSecond ?? 0) > (linkOf(s, 'only-a')?.inPerSecond ?? 0) &&
              (linkOf(s, 'out')?.outPerSecond ?? 0) > 0 &&
              own > 0 &&
              deployment > own &&
              (lagOf('only-a')?.inPerSecond ?? 0) > 0 &&
              (lagOf('only-b')?.inPerSecond ?? 0) > 0 &&
              (lagOf('out')?.outPerSecond ?? 0) > 0
            );
          },
          { timeoutMs: 60_000, intervalMs: 250, what: `replica ${name} to show both replicas' rates per link` },
        );
      }
    } finally {
      running = false;
      await traffic;
    }
  }, 120_000);

  it('measures a window of samples and sums replicas link by link', () => {
    const meter = new RateMeter();
    meter.sample(0);
    for (let i = 0; i < 20; i++) meter.countIn('mqtt', 'plant');
    for (let i = 0; i < 10; i++) meter.countOut('mqtt', 'plant');
    meter.countIn('xmpp', 'ops');
    expect(meter.rates(['mqtt', 'xmpp', 'idle'], 500)).toBeUndefined();
    const r = meter.rates(['mqtt', 'xmpp', 'idle'], 10_000);
    expect(r).toEqual({
      windowSeconds: 10,
      adapters: { mqtt: { inPerSecond: 2, outPerSecond: 1 }, xmpp: { inPerSecond: 0.1, outPerSecond: 0 }, idle: { inPerSecond: 0, outPerSecond: 0 } },
      links: [
        { room: 'plant', endpoint: 'mqtt', inPerSecond: 2, outPerSecond: 1 },
        { room: 'ops', endpoint: 'xmpp', inPerSecond: 0.1, outPerSecond: 0 },
      ],
    });
    const total = sumRates([r, undefined, r]);
    expect(total.adapters['mqtt']).toEqual({ inPerSecond: 4, outPerSecond: 2 });
    expect(total.links).toContainEqual({ room: 'plant', endpoint: 'mqtt', inPerSecond: 4, outPerSecond: 2 });
  });
});
