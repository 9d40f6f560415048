/**
 * The MQTT gateway of the e2e tests as an operator configures it: a config
 * file for `syncgate serve` on the test Redis and a Mosquitto, with one room
 * `plant` whose device alerts (`sensors/<device>/alert`, JSON `{ level }`)
 * are rendered `<device>: <level>`.
 */
import { writeFile } from 'node:fs/promises';
import { inject } from 'vitest';
import { stringify } from 'yaml';

export interface MqttGatewayConfig {
  readonly partitions: number;
  /** the Redis key prefix */
  readonly prefix: string;
  readonly port: number;
  readonly adminToken: string;
  readonly brokerUrl: string;
  /** the gateway's MQTT client id (its persistent session) */
  readonly clientId: string;
  /** `delivery.leaseMs`: the delivery leases and the adapter's connection lease */
  readonly leaseMs: number;
  readonly shutdownGraceMs?: number;
}

export async function writeMqttGatewayConfig(file: string, c: MqttGatewayConfig): Promise<void> {
  await writeFile(
    file,
    stringify({
      partitions: c.partitions,
      redis: { url: inject('redisUrl'), prefix: c.prefix },
      http: { port: c.port, adminToken: c.adminToken },
      log: { level: 'info' },
      ...(c.shutdownGraceMs !== undefined ? { shutdownGraceMs: c.shutdownGraceMs } : {}),
      delivery: { leaseMs: c.leaseMs },
      rooms: [{ id: 'plant', links: [{ endpoint: 'mqtt', target: 'sensors/+device/alert', options: { decode: 'json', template: '{{device}}: {{level}}' } }] }],
      adapters: { mqtt: { type: 'mqtt', url: c.brokerUrl, clientId: c.clientId, sessionExpirySec: 3600, reconnect: { minMs: 100, maxMs: 1000 } } },
    }),
  );
}
