/**
 * The connection to the homeserver, in either mode:
 * - appservice: our listener (appservice.ts) is up first, so the homeserver
 *   can push at once; then the homeserver is asked who we are, our bot's
 *   display name is set, the homeserver pings the listener (spec v1.7), and
 *   a health check now and then notices an unreachable homeserver;
 * - bot: log in (password) or use the token, then run the /sync loop
 *   (sync.ts) once the linked rooms are joined.
 * A failed connection is tried again in the background with backoff. Rooms
 * (joining, encryption) are rooms.ts's.
 */
import { mxPath, type JsonObject } from './client.js';
import { afterCryptoSync, closeCrypto, DEVICE_DISPLAY_NAME, deviceIdToUse, loginBridgeDevice, openCrypto, prepareCrypto } from './crypto/session.js';
import { MatrixApiError } from './errors.js';
import { joinLinked, joinRoom } from './rooms.js';
import type { MatrixAdapterState } from './state.js';
import { SyncLoop } from './sync.js';

const CONNECT_RETRY_MAX_MS = 60_000;

export async function startSession(s: MatrixAdapterState): Promise<void> {
  const session = s.session;
  if (session.started) return;
  session.started = true;
  session.stopping = false;
  // Started again after a stop (this replica won the connection lease back): what this instance
  // knew about its rooms may be stale — the bot may have been removed meanwhile — so learn it again.
  session.connected = false;
  session.connectFailures = 0;
  s.rooms.joined.clear();
  s.rooms.joinProblems.clear();
  try {
    // A wrong store secret fails the start (SG_ERR_STATE_SEALED_KEY): never a silent new device.
    await prepareCrypto(s);
  } catch (err) {
    session.started = false;
    throw err;
  }
  if (s.server) {
    const as = s.config.appservice;
    const address = await s.server.listen(as?.listenHost ?? '0.0.0.0', as?.listenPort ?? 0);
    s.log.info({ host: address.address, port: address.port }, 'Matrix application-service listener started');
  }
  session.unwatchLinks = s.deps.links.onChange(() => {
    if (session.connected) void joinLinked(s);
  });
  await connect(s);
  // Appservice mode has no long-poll that would notice an unreachable homeserver: ask now and then.
  if (s.mode === 'appservice') {
    session.healthTimer = setInterval(() => {
      if (session.connected) s.http.request('GET', '/_matrix/client/versions', { auth: false, timeoutMs: 5_000 }).catch(() => undefined);
    }, s.config.healthCheckIntervalMs);
    session.healthTimer.unref();
  }
}

export async function stopSession(s: MatrixAdapterState): Promise<void> {
  const session = s.session;
  if (!session.started) return;
  session.started = false;
  session.stopping = true;
  clearTimeout(session.connectTimer);
  clearInterval(session.healthTimer);
  session.unwatchLinks?.();
  await s.server?.close();
  await session.sync?.stop(s.config.stopGraceMs);
  session.sync = undefined;
  // A transaction still being appended: give it the grace period; it gets no 200 either way.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([s.txns.chain, new Promise<void>((resolve) => (timer = setTimeout(resolve, s.config.stopGraceMs)))]);
  clearTimeout(timer);
  session.connected = false;
  await closeCrypto(s);
  s.log.info('Matrix adapter stopped');
}

/** One attempt to reach the homeserver and join the linked rooms; on failure, again later in the background. */
async function connect(s: MatrixAdapterState): Promise<void> {
  const session = s.session;
  try {
    const versions = await s.http.request('GET', '/_matrix/client/versions', { auth: false });
    if (s.mode === 'bot') await loginBot(s);
    const whoami = await s.http.request('GET', '/_matrix/client/v3/account/whoami');
    if (typeof whoami['user_id'] === 'string' && whoami['user_id'] !== s.userId) {
      s.log.warn({ configured: s.userId, actual: whoami['user_id'] }, 'the Matrix token belongs to another user than configured; using the token\'s user');
      s.userId = whoami['user_id'];
    }
    // Before the rooms and the /sync loop: encrypted events in the first batch need the machine.
    if (s.mode === 'appservice') {
      // The bridge bot's device (only when the crypto is configured): its own login, its own token for the key requests.
      if (s.crypto.prepared && !s.crypto.feed) {
        const device = await loginBridgeDevice(s);
        await openCrypto(s, device.deviceId, device.http);
      } else await openCrypto(s, undefined);
    } else await openCrypto(s, typeof whoami['device_id'] === 'string' ? whoami['device_id'] : undefined);
    const name = s.config.appservice?.botDisplayName;
    if (s.mode === 'appservice' && name !== undefined) {
      await s.http.request('PUT', mxPath`/_matrix/client/v3/profile/${s.userId}/displayname`, { body: { displayname: name } });
    }
    session.connected = true;
    session.connectFailures = 0;
    if (s.mode === 'appservice') runPings(s, () => ping(s, versions));
    await joinLinked(s);
    if (s.mode === 'bot' && !session.sync && !session.stopping) await startSync(s);
    s.log.info({ mode: s.mode, userId: s.userId, joined: s.rooms.joined.size }, 'Matrix adapter connected');
  } catch (err) {
    if (session.stopping) return;
    session.connected = false;
    session.connectFailures++;
    const wait = Math.min(CONNECT_RETRY_MAX_MS, 1000 * 2 ** Math.min(session.connectFailures - 1, 6));
    s.log.error({ err, retryInMs: wait }, 'Matrix homeserver not reachable or refused us; retrying');
    session.connectTimer = setTimeout(() => void connect(s), wait);
    session.connectTimer.unref();
  }
}

/** Bot mode: the /sync loop feeds inbound/dispatch.ts; resolves once the homeserver answered the first /sync. */
async function startSync(s: MatrixAdapterState): Promise<void> {
  const bot = s.config.bot;
  s.session.sync = new SyncLoop({
    http: s.http,
    userId: s.userId,
    tokens: s.store.syncToken(s.userId),
    inbound: s.inbound,
    log: s.log,
    timeoutMs: bot?.syncTimeoutMs ?? 30_000,
    timelineLimit: bot?.timelineLimit ?? 50,
    isLinked: (roomId) => s.deps.links.roomsFor(s.name, roomId).length > 0,
    onInvite: (roomId) => joinRoom(s, roomId),
    onCrypto: async (res) => {
      await s.crypto.machine?.receiveSync(res);
      await afterCryptoSync(s);
    },
  });
  await s.session.sync.start();
}

async function loginBot(s: MatrixAdapterState): Promise<void> {
  const bot = s.config.bot;
  if (!bot || bot.accessToken !== undefined) return;
  // Our own login (not the SDK's MatrixAuth) so the device id is fixed: txnIds are scoped per device.
  const res = await s.http.request('POST', '/_matrix/client/v3/login', {
    auth: false,
    body: {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: bot.userId },
      password: bot.password,
      // bot.deviceId, or the replacement a lost crypto store made us create (crypto/session.ts)
      device_id: deviceIdToUse(s),
      initial_device_display_name: DEVICE_DISPLAY_NAME,
    },
  });
  const token = res['access_token'];
  if (typeof token !== 'string') throw new MatrixApiError(200, 'M_BAD_JSON', 'login answer without access_token');
  s.http.setAccessToken(token);
}

/**
 * Appservice mode, where the homeserver supports it (spec v1.7): asks the
 * homeserver to ping our listener, which proves at start that it reaches
 * us (the result is logged and in the status), and makes a homeserver that
 * does so (Synapse 1.132+) push what it failed to push at once.
 */
async function ping(s: MatrixAdapterState, versions: JsonObject): Promise<void> {
  if (!s.config.appservice || !supportsVersion(versions, 1, 7)) {
    s.session.pingResult = { supported: false };
    return;
  }
  await sendPing(s);
}

/**
 * A transaction was handled after the homeserver had stopped waiting for
 * its answer (its request timed out: the transaction waited for the bridge
 * device, or the machine is slow). The homeserver now backs off before
 * sending it again (Synapse: up to 512 s) and holds back everything after
 * it; a ping makes it send it at once (Synapse 1.132+), answered 200 from
 * the transaction record. Once per such transaction, never two pings at a time.
 */
export function pingAfterUnanswered(s: MatrixAdapterState): void {
  const session = s.session;
  if (session.stopping) return;
  if (session.pinging) {
    session.pingAgain = true;
    return;
  }
  // Before the ping at start (which comes next) or where the homeserver has no ping: nothing to do.
  if (!session.connected || session.pingResult?.supported !== true) return;
  runPings(s, () => sendPing(s));
}

/** One ping at a time: `first`, then once more if a ping was asked for meanwhile. */
function runPings(s: MatrixAdapterState, first: () => Promise<void>): void {
  const session = s.session;
  const run = async (): Promise<void> => {
    session.pingAgain = false;
    await first();
    while (session.pingAgain && !session.stopping && session.pingResult?.supported === true) {
      session.pingAgain = false;
      await sendPing(s);
    }
  };
  const pinging = run().finally(() => {
    if (session.pinging === pinging) session.pinging = undefined;
  });
  session.pinging = pinging;
}

async function sendPing(s: MatrixAdapterState): Promise<void> {
  const as = s.config.appservice;
  if (!as) return;
  try {
    const res = await s.http.request('POST', mxPath`/_matrix/client/v1/appservice/${as.id}/ping`, { body: {} });
    s.session.pingResult = { supported: true, ok: true, ...(typeof res['duration_ms'] === 'number' ? { durationMs: res['duration_ms'] } : {}) };
    s.log.info({ durationMs: res['duration_ms'] }, 'the homeserver reached our application-service listener (ping)');
  } catch (err) {
    s.session.pingResult = { supported: true, ok: false, error: err instanceof Error ? err.message : String(err) };
    s.log.warn({ err }, 'the homeserver could not reach our application-service listener (ping): check appservice.url');
  }
}

/** Whether /versions lists spec version `major.minor` or later. */
function supportsVersion(versions: JsonObject, major: number, minor: number): boolean {
  const list = Array.isArray(versions['versions']) ? versions['versions'] : [];
  return list.some((v) => {
    const m = typeof v === 'string' ? /^v(\d+)\.(\d+)$/.exec(v) : null;
    return m !== null && (Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor));
  });
}
