/**
 * A whole gateway on a real 6-node Redis Cluster while the master owning a
 * busy partition is killed (-9) and its replica promoted: devices keep
 * sending over HTTP (retrying each send with its txnId until it is
 * acknowledged) and an adapter keeps receiving deliveries.
 * - waitReplicas 1: every acknowledged event is in the log exactly once, in
 *   its room's order; delivery workers keep or re-take their leases, every
 *   event is delivered, in room order, and the adapter sees duplicates only
 *   of what was in flight.
 * - waitReplicas 0: reports how many acknowledged events were lost (the
 *   documented trade-off), and checks the gateway recovers with nothing
 *   doubled.
 * One cluster for the file; the two cases run one after the other.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../harness/free-port.js';
import { startGateway, type TestGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';
import { countAckedLost, expectEveryAckedOnce, type Acked } from '../harness/read-back.js';
import { clusterHealthy, failOverMasterOf } from '../harness/redis-cluster.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { partitionOfRoom } from '../harness/room-partition.js';
import { TestAdapter, memoryRecorder, type Recorder } from '../harness/test-adapter.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';

const PARTITIONS = 16;
const ROOMS = 8;
const PER_ROOM = 40;
const LEASE_MS = 1500;
/** entries a worker may have read and not acknowledged: one read batch (delivery.batch) */
const IN_FLIGHT_BOUND = 128;

const { owned } = useRedisCluster();

interface Run {
  readonly gw: TestGateway;
  readonly recorder: Recorder;
  readonly rooms: readonly string[];
  /** per room, the acknowledged sends in the order they were acknowledged */
  readonly acked: Map<string, Acked[]>;
  /** HTTP answers other than 200 while the writers retried */
  readonly refusals: Map<string, number>;
}

/**
 * A gateway with a delivering adapter; ROOMS writers send PER_ROOM messages
 * each over HTTP (each retried with its txnId until acknowledged); once the
 * busy room has 10 acknowledged, its partition's master is failed over.
 */
async function sendThroughFailover(waitReplicas: number): Promise<Run> {
  const c = owned();
  await waitFor(() => clusterHealthy(c.servers.map((s) => s.port), 3, 3), { timeoutMs: 60_000, intervalMs: 200, what: 'a healthy cluster to start from' });
  const prefix = testPrefix(`gwfail${waitReplicas}`);
  const recorder = memoryRecorder();
  const gw = await startGateway({
    config: { partitions: PARTITIONS, redis: { cluster: { nodes: c.nodes }, prefix, waitReplicas, waitTimeoutMs: 5_000 } },
    delivery: { leaseMs: LEASE_MS },
    extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, recorder)],
  });
  const rooms = Array.from({ length: ROOMS }, (_, i) => `gf-${i}`);
  for (const room of rooms) expect((await gw.admin('PUT', `/v1/admin/rooms/${room}`, { links: [{ endpoint: 'remote', target: `t-${room}` }] })).status).toBe(200);
  const token = await gw.deviceToken('alice', rooms);
  const acked = new Map<string, Acked[]>(rooms.map((r) => [r, []]));
  const refusals = new Map<string, number>();
  const send = async (room: string, i: number) => {
    const body = `${room}:${i}`;
    let eventId = '';
    await waitFor(
      async () => {
        const res = await gw
          .device<{ eventId: string; code?: string; message?: string }>(token, 'PUT', `/v1/rooms/${room}/send/m${i}`, { kind: 'message', content: { body } })
          .catch((err: unknown) => ({ status: 0, body: { eventId: '', code: String(err) } }));
        if (res.status !== 200) {
          const what = `${res.status} ${res.body.code ?? ''}`;
          refusals.set(what, (refusals.get(what) ?? 0) + 1);
        }
        eventId = res.body.eventId;
        return res.status === 200;
      },
      { timeoutMs: 90_000, intervalMs: 100, what: `the send of ${body} to be acknowledged` },
    );
    acked.get(room)?.push({ body, eventId });
  };
  const writing = Promise.all(
    rooms.map(async (room) => {
      for (let i = 0; i < PER_ROOM; i++) await send(room, i);
    }),
  );
  const busy = rooms[0] ?? '';
  const busyPartition = await partitionOfRoom(gw.gateway.log, busy);
  await waitFor(() => (acked.get(busy)?.length ?? 0) >= 10, { timeoutMs: 60_000, what: 'the busy room to have 10 acknowledged sends' });
  await failOverMasterOf(c, keySpace(prefix, LATEST_KEY_LAYOUT).feed(busyPartition));
  await writing;
  return { gw, recorder, rooms, acked, refusals };
}

/** While the master fails over a send may be refused, but only with a coded 503 the sender retries (never a 500). */
function expectOnlyRetryableRefusals(refusals: ReadonlyMap<string, number>): void {
  for (const what of refusals.keys()) expect(what).toMatch(/^503 SG_ERR_LOG_(UNAVAILABLE|PARTITION_UNAVAILABLE|NOT_REPLICATED)$/);
}

describe('a gateway on Redis Cluster across a master failover', () => {
  it('waitReplicas 1: every acknowledged HTTP send once and in order; every event delivered, leases kept or re-taken, duplicates only of what was in flight', async () => {
    const run = await sendThroughFailover(1);
    const { gw, recorder, rooms, acked } = run;
    try {
      await expectEveryAckedOnce(gw.gateway.log, rooms, acked, PER_ROOM);

      // delivery went on: every event reached the adapter, in each room's order
      await waitFor(async () => (await recorder.all()).length === ROOMS * PER_ROOM, { timeoutMs: 90_000, what: 'every event delivered after the failover' });
      const delivered = await recorder.all();
      for (const room of rooms) {
        expect(delivered.filter((d) => d.room === room).map((d) => d.eventId)).toEqual((acked.get(room) ?? []).map((a) => a.eventId));
      }
      // the workers hold every partition's lease again
      await waitFor(async () => (await gw.gateway.status()).adapters['remote']?.delivery.partitionsHeld === PARTITIONS, { timeoutMs: 30_000, what: 'every delivery lease held' });
      const duplicates = await recorder.duplicates();
      process.stdout.write(`gateway failover, waitReplicas 1: ${ROOMS * PER_ROOM} events, ${duplicates} duplicate deliveries absorbed; refusals while failing over ${JSON.stringify([...run.refusals])}\n`);
      expect(duplicates).toBeLessThanOrEqual(IN_FLIGHT_BOUND);
      expectOnlyRetryableRefusals(run.refusals);
    } finally {
      await gw.stop();
    }
  }, 300_000);

  it('waitReplicas 0: reports the acknowledged sends lost, recovers, and doubles nothing', async () => {
    const run = await sendThroughFailover(0);
    const { gw, rooms, acked } = run;
    try {
      // recovered: every writer got all its sends acknowledged after the failover
      const lost = await countAckedLost(gw.gateway.log, rooms, acked, PER_ROOM);
      // sends after the failover are appended and delivered
      const token = await gw.deviceToken('carol', rooms);
      const after = await gw.device<{ eventId: string }>(token, 'PUT', `/v1/rooms/${rooms[0] ?? ''}/send/after`, { kind: 'message', content: { body: 'after' } });
      expect(after.status).toBe(200);
      await waitFor(async () => (await run.recorder.all()).some((d) => d.eventId === after.body.eventId), { timeoutMs: 30_000, what: 'a send after the failover delivered' });
      // the documented trade-off: reported, not asserted to be zero
      process.stdout.write(`gateway failover, waitReplicas 0: ${lost} of ${ROOMS * PER_ROOM} acknowledged sends lost; refusals while failing over ${JSON.stringify([...run.refusals])}\n`);
      expectOnlyRetryableRefusals(run.refusals);
    } finally {
      await gw.stop();
    }
  }, 300_000);
});
