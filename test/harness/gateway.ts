/**
 * A whole gateway in the test process (createGateway, listening on a free
 * port), plus a small client for the admin and device API.
 */
import { requestJson } from '../../src/cli/client.js';
import { resolveConfig } from '../../src/config/index.js';
import type { Adapter } from '../../src/core/adapter.js';
import type { DeliveryOptions } from '../../src/bridge/delivery.js';
import { silentLogger } from '../../src/log/index.js';
import { createGateway, type Gateway } from '../../src/runtime/gateway.js';
import type { AdapterContext } from '../../src/runtime/adapters.js';
import { testPrefix } from './redis.js';

export const GATEWAY_ADMIN_TOKEN = 'gateway-admin-token-0123456789';

export interface TestGateway {
  readonly gateway: Gateway;
  readonly url: string;
  admin<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  device<T = unknown>(token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** creates (or reuses) a user granted the rooms and a new device; returns the device token */
  deviceToken(user: string, rooms: readonly string[]): Promise<string>;
  stop(): Promise<void>;
}

export interface GatewayOptions {
  readonly redisUrl?: string;
  readonly prefix?: string;
  readonly config?: Record<string, unknown>;
  readonly extraAdapters?: (context: AdapterContext) => Adapter[];
  readonly delivery?: Partial<DeliveryOptions>;
}

async function call<T>(url: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: T }> {
  const { status, body: answer } = await requestJson<T>(url, token, method, path, body);
  return { status, body: answer };
}

export async function startGateway(options: GatewayOptions = {}): Promise<TestGateway> {
  const config = resolveConfig({
    partitions: 4,
    http: { port: 0, adminToken: GATEWAY_ADMIN_TOKEN, rateLimit: { perSecond: 10_000, burst: 10_000 } },
    ...(options.redisUrl ? { redis: { url: options.redisUrl, prefix: options.prefix ?? testPrefix('gw') } } : {}),
    shutdownGraceMs: 2000,
    // several replicas run in this one process: each its own identity, as pods have
    replicaId: `test-${Math.random().toString(36).slice(2, 10)}`,
    ...options.config,
  });
  const gateway = await createGateway({
    config,
    logger: silentLogger(),
    ...(options.extraAdapters ? { extraAdapters: options.extraAdapters } : {}),
    deliveryOptions: { leaseMs: 3000, backoffBaseMs: 50, backoffMaxMs: 1000, ...options.delivery },
  });
  const address = await gateway.start();
  // The API listens before the adapters start; the tests want them started (or standing by) first.
  await gateway.adaptersStarted();
  const url = address.replace('0.0.0.0', '127.0.0.1');
  const users = new Set<string>();
  const tg: TestGateway = {
    gateway,
    url,
    admin: (method, path, body) => call(url, method, path, GATEWAY_ADMIN_TOKEN, body),
    device: (token, method, path, body) => call(url, method, path, token, body),
    async deviceToken(user, rooms) {
      if (!users.has(user)) {
        const created = await tg.admin('POST', '/v1/admin/users', { id: user, display: user });
        if (created.status !== 201 && created.status !== 200 && created.status !== 409) throw new Error(`user ${user}: ${created.status}`);
        users.add(user);
      }
      for (const room of rooms) {
        const granted = await tg.admin('PUT', `/v1/admin/users/${user}/rooms/${room}`);
        if (granted.status >= 300) throw new Error(`grant ${room}: ${granted.status} ${JSON.stringify(granted.body)}`);
      }
      const device = await tg.admin<{ token: string }>('POST', '/v1/admin/devices', { user, name: `d${Math.random()}` });
      if (device.status >= 300) throw new Error(`device: ${device.status}`);
      return device.body.token;
    },
    stop: () => gateway.stop(),
  };
  return tg;
}
