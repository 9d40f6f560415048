/**
 * The encrypted room both E2EE modes are tested in: the fake homeserver's
 * room (helpers.ts) with m.room.encryption, a member (alice) whose client is
 * the independent Rust-crypto peer (test/harness/matrix-e2ee-peer.ts), and
 * the adapter with its crypto state sealed in the log's state store, started
 * in bot mode (relay account, its own device) or in appservice mode (the
 * bridge bot's device, fed from the transactions' MSC2409/MSC3202
 * extensions), and waited for until its device is active.
 */
import { parse } from 'yaml';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { createMatrixAdapter, registrationYaml } from '../../../adapters/matrix/index.js';
import type { MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import type { AppServiceRegistration, FakeHomeserverOptions } from '../../harness/fake-homeserver.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { appserviceConfig, botConfig, createEnv, type Env } from './helpers.js';

export type E2eeMode = 'bot' | 'appservice';

export const STORE_SECRET = 'a store secret of some length';
/** Synapse's experimental_features msc2409_to_device_messages_enabled and msc3202_transaction_extensions */
export const AS_EXTENSIONS: FakeHomeserverOptions = { msc2409ToDevice: true, msc3202TransactionExtensions: true };
/** who speaks for the bridge in the encrypted room: the relay account (bot mode) or the bridge bot (appservice mode) */
export const BRIDGE_USER: Readonly<Record<E2eeMode, string>> = { bot: '@relay:fake.test', appservice: '@syncgate:fake.test' };

export interface EncryptedRoom {
  readonly mode: E2eeMode;
  readonly env: Env;
  readonly peer: E2eePeer;
  readonly adapter: MatrixAdapter;
  /** the bridge's Matrix user in the room */
  readonly bridgeUser: string;
  close(): Promise<void>;
}

export interface EncryptedRoomOptions {
  readonly hs?: FakeHomeserverOptions;
  /** top-level adapter config (mediaUploadAllowHttp …) */
  readonly config?: Record<string, unknown>;
  /** leave the room unencrypted (a test turns encryption on later) */
  readonly clear?: boolean;
}

/** Turns end-to-end encryption on in a room (helpers.ts's room by default), as its creator alice. */
export function encryptRoom(env: Env, roomId = env.roomId, settings: Record<string, unknown> = {}): void {
  env.hs.sendStateAsUser(env.alice.userId, roomId, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2', ...settings });
}

/** Alice's phone: the member's independent E2EE client. */
export function memberPeer(env: Env, deviceId = 'ALICEPHONE'): Promise<E2eePeer> {
  return E2eePeer.login(env.hs.url, env.alice.userId, 'pw', deviceId);
}

/** The adapter (not started) with the real sink and its crypto state sealed in the log's state store. */
export function createE2eeAdapter(env: Env, config: MatrixAdapterConfig): MatrixAdapter {
  return createMatrixAdapter({
    name: 'matrix',
    config,
    log: env.logger.child({ adapter: 'matrix' }),
    sink: createIngestSink({ log: env.log, logger: env.logger }),
    links: env.links,
    state: env.log.state,
    sealed: (ns, secret) => createSealedStore(env.log.state, ns, secret),
  });
}

/** Appservice mode: our own registration file, as the CLI writes it (it asks for MSC2409 and MSC3202), not pushed to yet. */
export function registerOwnAppservice(env: Env, config: MatrixAdapterConfig): void {
  env.hs.registerAppService({ ...(parse(registrationYaml(config)) as AppServiceRegistration), url: null });
}

/** Appservice mode: the homeserver pushes its transactions to the started adapter's listener. */
export function pointHomeserverAt(env: Env, adapter: MatrixAdapter): void {
  const address = adapter.listenAddress();
  if (!address) throw new Error('no appservice listener');
  env.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${address.port}`);
}

/** Sets the room up, starts the adapter and waits until its device is active and the peer knows it. */
export async function encryptedRoom(mode: E2eeMode, opts: EncryptedRoomOptions = {}): Promise<EncryptedRoom> {
  const env = await createEnv({ hs: mode === 'appservice' ? { ...AS_EXTENSIONS, ...opts.hs } : { ...opts.hs } });
  let peer: E2eePeer | undefined;
  let adapter: MatrixAdapter | undefined;
  const close = async (): Promise<void> => {
    await adapter?.stop();
    peer?.close();
    await env.close();
  };
  try {
    if (mode === 'bot') env.hs.registerUser('relay', 'relay-pw');
    if (!opts.clear) encryptRoom(env);
    peer = await memberPeer(env);
    const top = { encryption: { storeSecret: STORE_SECRET }, ...opts.config };
    const config: MatrixAdapterConfig = mode === 'bot' ? botConfig(env, {}, top) : appserviceConfig(env, {}, top);
    if (mode === 'appservice') registerOwnAppservice(env, config);
    adapter = createE2eeAdapter(env, config);
    await adapter.start();
    const started = adapter;
    if (mode === 'appservice') pointHomeserverAt(env, started);
    const bridgeUser = BRIDGE_USER[mode];
    await waitFor(() => env.hs.keys.keysOf(bridgeUser, 'SYNCGATE') !== undefined && (started.status().detail?.['encryption'] as { active?: boolean } | undefined)?.active === true && started.status().ready, {
      timeoutMs: 30_000,
      what: `the ${mode} bridge device active and the adapter ready`,
    }).catch((err: unknown) => {
      throw new Error(`${String(err)}; status: ${JSON.stringify(started.status())}; errors: ${JSON.stringify(env.lines.filter((l) => l.level >= 50).slice(-5))}`);
    });
    await peer.sync();
    return { mode, env, peer, adapter: started, bridgeUser, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** A fresh world for a bot-mode test: the relay account, helpers.ts's room encrypted, and alice's phone (her peer). */
export async function relayWorld(): Promise<{ env: Env; alice: E2eePeer }> {
  const env = await createEnv();
  env.hs.registerUser('relay', 'relay-pw');
  encryptRoom(env);
  return { env, alice: await memberPeer(env) };
}

/** Creates and starts the adapter, kept in `adapters` so that closeWorld stops it. */
export async function startKept(env: Env, adapters: MatrixAdapter[], config: MatrixAdapterConfig): Promise<MatrixAdapter> {
  const adapter = createE2eeAdapter(env, config);
  adapters.push(adapter);
  await adapter.start();
  return adapter;
}

/** After a test: its adapters stopped, its peers closed, the world closed. */
export async function closeWorld(env: Env, adapters: MatrixAdapter[], peers: E2eePeer[]): Promise<void> {
  for (const a of adapters.splice(0)) await a.stop();
  for (const p of peers.splice(0)) p.close();
  await env.close();
}
