/**
 * createMatrixAdapter: builds the adapter's state (state.ts) once and wires
 * the modules to it — the session (session.ts), the rooms (rooms.ts), the
 * receiving side (appservice.ts → transactions.ts, or sync.ts) into
 * inbound/, delivery (outbound/) and the status (status.ts).
 */
import { MatrixHttp } from './client.js';
import { AppserviceServer } from './appservice.js';
import { botUserId, ghostUserRegex, type MatrixAdapterConfig } from './config.js';
import { EncryptedMedia } from './crypto/media.js';
import { MatrixConfigError } from './errors.js';
import { Ghosts } from './ghosts.js';
import { createInbound } from './inbound/dispatch.js';
import { deliver } from './outbound/deliver.js';
import { MAX_TEXT_JSON_BYTES } from './render.js';
import { checkLink, isOurs, joinRoom, markEncrypted, refusesClearRoom } from './rooms.js';
import { pingAfterUnanswered, startSession, stopSession } from './session.js';
import { newSession, type MatrixAdapter, type MatrixAdapterDeps, type MatrixAdapterState } from './state.js';
import { listenAddress, status } from './status.js';
import { AdapterStore, memoryMatrixState } from './store.js';
import { onTransaction } from './transactions.js';

export function createMatrixAdapter(deps: MatrixAdapterDeps): MatrixAdapter {
  const s = createState(deps);
  return {
    protocol: 'matrix',
    // one event's text; a longer one is cut with a marker (render.ts fitTextContent)
    maxBodyBytes: MAX_TEXT_JSON_BYTES,
    name: s.name,
    mode: s.mode,
    txns: s.store,
    start: () => startSession(s),
    stop: () => stopSession(s),
    status: () => status(s),
    deliver: (event, target, context) => deliver(s, event, target, context),
    checkLink: (link) => checkLink(s, link),
    listenAddress: () => listenAddress(s),
    media: (id) => s.media.serve(id),
  };
}

function createState(deps: MatrixAdapterDeps): MatrixAdapterState {
  const config: MatrixAdapterConfig = deps.config;
  const mode = config.mode;
  if (!deps.state) deps.log.warn('Matrix adapter state is kept in memory: completed transactions, the sync token and reaction maps are lost on restart');
  const kv = deps.state ?? memoryMatrixState();
  const store = new AdapterStore(kv, `matrix:${deps.name}`, (config.appservice?.transactionTtlHours ?? 72) * 3600_000);
  const token = mode === 'appservice' ? (config.appservice?.asToken ?? '') : (config.bot?.accessToken ?? '');
  const http = new MatrixHttp({ baseUrl: config.homeserverUrl, accessToken: token, timeoutMs: config.requestTimeoutMs });
  const as = config.appservice;
  if (mode === 'appservice' && !as) throw new MatrixConfigError(['/appservice: required in appservice mode (validate with parseMatrixConfig)']);
  const appservice = mode === 'appservice' ? as : undefined;
  const template = config.mediaUrlTemplate;
  const storeSecret = config.encryption?.storeSecret;
  if (storeSecret !== undefined && config.encryption?.mode !== 'off' && config.encryptedMediaBaseUrl === undefined) {
    deps.log.info('encryptedMediaBaseUrl is not set: files of encrypted rooms get the path /v1/media/<adapter>/<id>, which HTTP API clients resolve against the gateway; XMPP and MQTT clients need the absolute URL');
  }
  const media = new EncryptedMedia({
    adapter: deps.name,
    http,
    links: deps.links,
    store: deps.sealed && storeSecret !== undefined && config.encryption?.mode !== 'off' ? deps.sealed(`matrix-media:${deps.name}`, storeSecret) : undefined,
    baseUrl: config.encryptedMediaBaseUrl ?? `/v1/media/${encodeURIComponent(deps.name)}`,
    maxBytes: config.encryptedMediaMaxBytes,
  });
  // The modules reach each other through the state; the callbacks below close over it once it exists.
  const s: MatrixAdapterState = {
    name: deps.name,
    mode,
    config,
    deps,
    log: deps.log,
    http,
    store,
    kv,
    userId: botUserId(config),
    ghostRegex: appservice ? new RegExp(`^(?:${ghostUserRegex({ serverName: config.serverName, appservice })})$`) : undefined,
    ghosts: appservice ? new Ghosts({ http, prefix: appservice.ghostPrefix, serverName: config.serverName, log: deps.log }) : undefined,
    server: appservice
      ? new AppserviceServer({
          hsToken: appservice.hsToken,
          maxBodyBytes: appservice.maxBodyBytes,
          log: deps.log,
          onTransaction: (txnId, body) => onTransaction(s, txnId, body),
          onUnanswered: () => pingAfterUnanswered(s),
        })
      : undefined,
    inbound: createInbound({
      name: deps.name,
      log: deps.log,
      sink: deps.sink,
      links: deps.links,
      store,
      http,
      isOurs: (userId) => isOurs(s, userId),
      botUserId: () => s.userId,
      ...(template !== undefined ? { mediaUrl: (mxc: string) => mediaUrl(template, mxc) } : {}),
      encryptedMedia: media,
      onInvite: (roomId) => joinRoom(s, roomId),
      onEncrypted: (roomId) => markEncrypted(s, roomId),
      refusesClear: (roomId) => refusesClearRoom(s, roomId),
      // While the appservice extensions probe runs (crypto/appservice.ts), the bridge device decrypts already.
      decrypt: (event, roomId) => (s.crypto.machine ?? (s.crypto.extensionsMissing === undefined ? s.crypto.feed : undefined))?.decrypt(event, roomId),
      hold: (event, reason) => s.crypto.held?.hold(event.event_id, { event: { ...event }, roomId: event.room_id, reason, since: Date.now() }) ?? Promise.resolve(false),
    }),
    media,
    session: newSession(),
    rooms: { joined: new Set(), joinProblems: new Map(), encrypted: new Set() },
    crypto: { prepared: undefined, opening: undefined, machine: undefined, problem: undefined, lost: undefined, feed: undefined, probe: undefined, extensionsMissing: undefined, held: undefined, heldTimer: undefined, roomSettings: new Map(), oldDevices: undefined, crossSigning: undefined },
    txns: { chain: Promise.resolve(), inflight: new Map(), lastPrune: 0 },
    outbound: { uploads: new Map(), counters: { delivered: 0, retried: 0, rejected: 0, skipped: 0, rateLimited: 0 } },
  };
  return s;
}

/** mxc://server/id → the URL HTTP clients get (`mediaUrlTemplate`). */
function mediaUrl(template: string, mxc: string): string {
  const m = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mxc);
  if (!m) return mxc;
  return template.replace(/\{server\}/g, encodeURIComponent(m[1] ?? '')).replace(/\{mediaId\}/g, encodeURIComponent(m[2] ?? ''));
}
