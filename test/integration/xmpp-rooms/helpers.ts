/**
 * The world of the xmpp-rooms tests that run a whole gateway: a private
 * Prosody with the rooms component, accounts on it, and a gateway on the test
 * Redis whose `rooms` adapter (type xmpp-rooms) is connected as that
 * component, with HTTP device tokens for the gateway users.
 */
import { randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { startProsody, type ProsodyServer } from '../../harness/prosody.js';
import { testPrefix } from '../../harness/redis.js';
import { endUsers, until } from '../xmpp/helpers.js';

export interface RoomsWorld {
  readonly prosody: ProsodyServer;
  readonly gw: TestGateway;
  /** the component's domain: room `x` is `x@<domain>` */
  readonly domain: string;
  /** the device token of a gateway user named in `devices` */
  token(user: string): string;
  /** Ends the test users (TestUser), then stops the gateway and Prosody. */
  stop(): Promise<void>;
}

export interface RoomsWorldOptions {
  /** names the gateway's fresh Redis prefix (`testPrefix`) */
  readonly prefix: string;
  /** Prosody accounts, each with the password `<name>-pw` */
  readonly accounts: readonly string[];
  /** the accounts the component lets in, each as the gateway user of the same name */
  readonly access: readonly string[];
  /** further options of the rooms adapter */
  readonly adapter?: Record<string, unknown>;
  /** the gateway's rooms (config `rooms`) */
  readonly rooms: readonly unknown[];
  /** gateway users and the rooms they are granted, each given a device token, in this order */
  readonly devices: ReadonlyArray<readonly [user: string, rooms: readonly string[]]>;
}

/** Starts Prosody and the gateway, and resolves once the component is connected. */
export async function startRoomsWorld(options: RoomsWorldOptions): Promise<RoomsWorld> {
  const secret = `rooms-secret-${randomUUID()}`;
  const prosody = await startProsody({ component: { secret } });
  let gw: TestGateway | undefined;
  const stop = async (): Promise<void> => {
    await endUsers();
    await gw?.stop();
    await prosody.stop();
  };
  try {
    const component = prosody.component;
    if (!component) throw new Error('no component');
    await Promise.all(options.accounts.map((u) => prosody.createUser(u, `${u}-pw`)));
    gw = await startGateway({
      redisUrl: inject('redisUrl'),
      prefix: testPrefix(options.prefix),
      config: {
        adapters: {
          rooms: {
            type: 'xmpp-rooms',
            service: component.service,
            domain: component.domain,
            secret,
            reconnect: { minMs: 100, maxMs: 1000 },
            ...options.adapter,
            access: options.access.map((u) => ({ jid: `${u}@${prosody.domain}`, user: u })),
          },
        },
        rooms: options.rooms,
      },
    });
    const tokens = new Map<string, string>();
    for (const [user, rooms] of options.devices) tokens.set(user, await gw.deviceToken(user, rooms));
    const started = gw;
    await until(async () => (await started.gateway.status()).adapters['rooms']?.connected === true, 'the component to connect');
    const token = (user: string): string => {
      const t = tokens.get(user);
      if (t === undefined) throw new Error(`no device token for ${user}`);
      return t;
    };
    return { prosody, gw, domain: component.domain, token, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
