/**
 * The connection and its sessions (client.ts holds the c2s connection itself).
 *
 * Every new session (not a resumption): disco of the account, Carbons on, a MAM
 * catch-up of the account archive from the persisted position (mam.ts), then
 * presence and the MUC joins (muc.ts), each followed by the room's catch-up.
 * Stanzas go to the inbound dispatch (inbound/dispatch.ts). The adapter's
 * start() waits, up to `startTimeoutMs`, until it is ready; stop() lets
 * deliveries and queued appends finish and writes the archive positions.
 */
import { XmppConnection } from './client.js';
import { onStanza } from './inbound/dispatch.js';
import { refreshTargets } from './links.js';
import { scheduleCatchup } from './mam.js';
import { joinRoom, selfPingAll } from './muc.js';
import { DEVICE_LIST_NODE, loadDevice, publishDevice } from './omemo.js';
import { capsElement, carbonsEnable, discoFeatures, discoInfo } from './protocol.js';
import { sleep, type XmppAdapterState } from './state.js';
import { isReady } from './status.js';
import { NS, xml } from './xml.js';

/** What we tell others we understand (disco#info on our full JID). */
const FEATURES = [NS.discoInfo, NS.correct, NS.retract, NS.reactions, NS.reply, NS.markers, NS.receipts, NS.oob, NS.styling, NS.ping, NS.sid];
/** With an OMEMO device: device list notifications (XEP-0163 +notify) too. */
const OMEMO_FEATURES = [...FEATURES, `${DEVICE_LIST_NODE}+notify`];

/** A connection whose events reach this adapter's state (one per session run: a connection is not reused after its stop()). */
export function openConnection(s: XmppAdapterState): XmppConnection {
  return new XmppConnection({
    config: s.config,
    log: s.log,
    features: s.omemo ? OMEMO_FEATURES : FEATURES,
    onStanza: (stanza) => onStanza(s, stanza),
    onSession: () => onSession(s),
    onResumed: () => undefined,
    onDisconnect: () => {
      for (const room of s.rooms.values()) room.joining?.resolve({ ok: false, condition: 'disconnected' });
    },
  });
}

/** A new session: what the old one knew about rooms and archives no longer holds; set up again. */
function onSession(s: XmppAdapterState): void {
  const gen = ++s.generation;
  s.accountTrack.caughtUp = false;
  s.accountTrack.resyncPending = false;
  for (const room of s.rooms.values()) {
    room.joined = false;
    room.joining?.resolve({ ok: false, condition: 'new session' });
    room.track.caughtUp = false;
    room.track.resyncPending = false;
    room.nick = room.configuredNick;
  }
  void setUpSession(s, gen).catch((err: unknown) => s.log.error({ err }, 'session setup failed'));
}

async function setUpSession(s: XmppAdapterState, gen: number): Promise<void> {
  const { config, log } = s;
  try {
    const features = discoFeatures(await s.connection.request(discoInfo(s.account), config.iqTimeoutMs));
    // MAM v2 requires the server to stamp (and strip forged) stanza-ids (XEP-0313 §3.5), so either feature will do.
    s.accountFacts = { stanzaIds: features.has(NS.sid) || features.has(NS.mam), mam: features.has(NS.mam) };
  } catch (err) {
    log.warn({ err }, 'disco#info of the account failed; assuming no archive');
    s.accountFacts = { stanzaIds: false, mam: false };
  }
  if (gen !== s.generation) return;
  try {
    // Carbons before the archive query: nothing sent to another resource from now on is missed (XEP-0280 wiki).
    await s.connection.request(carbonsEnable(), config.iqTimeoutMs);
  } catch (err) {
    log.warn({ err }, 'could not enable Carbons');
  }
  if (gen !== s.generation) return;
  if (s.omemo && s.omemo.state !== 'failed') {
    // Announced before the catch-up: contacts can build sessions with us from now on.
    await publishDevice(s, s.omemo).catch((err: unknown) => log.error({ err }, 'could not publish the OMEMO device list and bundle (PEP); contacts cannot start encrypted sessions with the bridge until the next session'));
    if (gen !== s.generation) return;
  }
  if (s.accountFacts.mam) scheduleCatchup(s, s.accountTrack, gen);
  else {
    log.warn('the account has no archive (MAM): 1:1 messages sent while we were away are not recovered');
    s.accountTrack.caughtUp = true;
  }
  // With an OMEMO device, caps name the device list +notify: the server then pushes device list changes (XEP-0163).
  await s.connection.send(xml('presence', {}, s.omemo ? capsElement(OMEMO_FEATURES) : undefined)).catch(() => undefined);
  for (const room of s.rooms.values()) void joinRoom(s, room, gen);
}

export async function start(s: XmppAdapterState): Promise<void> {
  const { config, log } = s;
  if (s.started) return;
  s.started = true;
  if (s.stopping) {
    // Started again after a stop (this replica won the connection lease back): a new session.
    // Another replica may have moved the catch-up positions meanwhile: read them again.
    s.stopping = false;
    s.reconnect();
    for (const t of s.tracks()) t.reload();
    // Another replica may have seen encrypted messages meanwhile.
    s.encryptedConversations.clear();
  }
  // The device's keys before any message: a wrong omemoSecret stops the start here (SG_ERR_STATE_SEALED_KEY).
  if (s.omemo) {
    try {
      await loadDevice(s, s.omemo);
    } catch (err) {
      s.started = false;
      throw err;
    }
  }
  refreshTargets(s);
  s.unwatch = s.links.onChange(() => refreshTargets(s));
  s.connection.start();
  if (config.selfPingIntervalMs > 0) {
    s.pingTimer = setInterval(() => {
      selfPingAll(s).catch((err: unknown) => log.warn({ err }, 'MUC self-ping failed'));
    }, config.selfPingIntervalMs);
    s.pingTimer.unref();
  }
  const deadline = Date.now() + config.startTimeoutMs;
  while (!isReady(s) && Date.now() < deadline && !s.stopping) await sleep(25);
  if (!isReady(s)) log.warn({ timeoutMs: config.startTimeoutMs }, 'XMPP adapter not ready yet; it keeps connecting in the background');
}

export async function stop(s: XmppAdapterState): Promise<void> {
  const { config } = s;
  if (!s.started || s.stopping) return;
  s.stopping = true;
  // Work of this session ends here, also once a later start() has cleared `stopping`.
  s.generation++;
  s.unwatch?.();
  clearInterval(s.pingTimer);
  for (const room of s.rooms.values()) clearTimeout(room.rejoinTimer);
  await Promise.race([Promise.allSettled([...s.inFlight]), sleep(config.deliveryTimeoutMs)]);
  await s.connection.stop(config.streamTimeoutMs);
  // What was received is appended and its position written; the rest comes back by catch-up.
  const tracks = s.tracks();
  await Promise.race([Promise.allSettled(tracks.map((t) => t.idle())), sleep(config.ingestRetryMs + 1000)]);
  await Promise.allSettled(tracks.map((t) => t.flush()));
  s.started = false;
}

/** Drops the connection like a crash: no closing stream, no position flush. */
export function abort(s: XmppAdapterState): void {
  s.stopping = true;
  s.started = false;
  s.unwatch?.();
  clearInterval(s.pingTimer);
  for (const room of s.rooms.values()) clearTimeout(room.rejoinTimer);
  s.connection.abort();
}
