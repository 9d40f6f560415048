/**
 * A master of a real Redis Cluster is killed (-9) while appends stream into
 * the partition it owns. With redis.waitReplicas 1 every acknowledged event is
 * on the replica that gets promoted: after the failover each one is in the log
 * exactly once, in its room's order. One 6-node cluster for this file.
 */
import { describe, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { appendUntilAcked, countAckedLost, expectEveryAckedOnce, type Acked } from '../harness/read-back.js';
import { clusterHealthy, failOverMasterOf } from '../harness/redis-cluster.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { partitionOfRoom } from '../harness/room-partition.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';

const { owned } = useRedisCluster();

const PARTITIONS = 16;
const PER_ROOM = 60;




describe('event log on Redis Cluster across a master failover', () => {
  it('kill -9 of the master owning a busy partition, waitReplicas 1: every acknowledged event once, per-room order holds', async () => {
    const c = owned();
    const prefix = testPrefix('failover');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: c.nodes }, prefix, waitReplicas: 1, waitTimeoutMs: 5_000 } });
    try {
      const rooms = Array.from({ length: 8 }, (_, i) => `fo-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      const busy = rooms[0] ?? 'fo-0';
      const acked = new Map<string, Acked[]>(rooms.map((r) => [r, []]));
      const writers = rooms.map(async (room) => {
        for (let i = 0; i < PER_ROOM; i++) {
          const body = `${room}:${i}`;
          const eventId = await appendUntilAcked(log, room, body);
          acked.get(room)?.push({ body, eventId });
        }
      });
      const writing = Promise.all(writers);

      await waitFor(() => (acked.get(busy)?.length ?? 0) >= 10, { timeoutMs: 60_000, what: 'the busy room to have 10 acknowledged events' });
      await failOverMasterOf(c, keySpace(prefix, LATEST_KEY_LAYOUT).feed(await partitionOfRoom(log, busy)));
      await writing;

      // nothing doubled; every acknowledged event is there, with the id it was acknowledged with, in the room's order
      await expectEveryAckedOnce(log, rooms, acked, PER_ROOM);
    } finally {
      await log.close();
    }
  }, 240_000);

  it('the same with waitReplicas 0: reports how many acknowledged events were lost, recovers, and doubles nothing', async () => {
    const c = owned();
    await waitFor(() => clusterHealthy(c.servers.map((s) => s.port), 3, 3), { timeoutMs: 60_000, intervalMs: 200, what: 'a healthy cluster to start from' });
    const prefix = testPrefix('failover0');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: c.nodes }, prefix } });
    try {
      const rooms = Array.from({ length: 8 }, (_, i) => `z-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      const busy = rooms[0] ?? 'z-0';
      const acked = new Map<string, Acked[]>(rooms.map((r) => [r, []]));
      const writing = Promise.all(
        rooms.map(async (room) => {
          for (let i = 0; i < PER_ROOM; i++) {
            const body = `${room}:${i}`;
            acked.get(room)?.push({ body, eventId: await appendUntilAcked(log, room, body) });
          }
        }),
      );
      await waitFor(() => (acked.get(busy)?.length ?? 0) >= 10, { timeoutMs: 60_000, what: 'the busy room to have 10 acknowledged events' });
      await failOverMasterOf(c, keySpace(prefix, LATEST_KEY_LAYOUT).feed(await partitionOfRoom(log, busy)));
      // recovers: every writer got all its appends acknowledged after the failover
      await writing;

      // what is there is in the room's order, and nothing is there that was not acknowledged
      const lost = await countAckedLost(log, rooms, acked, PER_ROOM);
      // the documented trade-off: not asserted to be zero
      console.info(`waitReplicas 0 failover: ${lost} of ${rooms.length * PER_ROOM} acknowledged events lost`);
    } finally {
      await log.close();
    }
  }, 240_000);
});
