/**
 * One harness Redis Cluster for a whole test file: started in beforeAll,
 * stopped in afterAll. Kept apart from redis-cluster.ts because that module
 * is also used by the benches, which do not run under vitest.
 */
import { afterAll, beforeAll } from 'vitest';
import { startRedisCluster, type RedisClusterOptions, type TestRedisCluster } from './redis-cluster.js';

export interface RedisClusterSuite {
  /** the cluster; throws if it did not start */
  started(): TestRedisCluster;
  /** the cluster, for a test that kills or pauses nodes: throws unless the harness started them (not REDIS_CLUSTER_NODES) */
  owned(): TestRedisCluster;
}

export function useRedisCluster(options: RedisClusterOptions = {}): RedisClusterSuite {
  let cluster: TestRedisCluster | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster(options);
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  return {
    started() {
      if (!cluster) throw new Error('the test cluster did not start');
      return cluster;
    },
    owned() {
      if (!cluster?.owned) throw new Error('this test kills nodes: it needs the harness-started cluster (not REDIS_CLUSTER_NODES)');
      return cluster;
    },
  };
}
