/**
 * The XMPP adapter (docs/protocols.md, "XMPP"; issue 6): the bridge account in MUCs and 1:1.
 *
 * Session (every new session, not a resumption): disco of the account, Carbons
 * on, a MAM catch-up of the account archive from the persisted position, then
 * presence, MUC joins and a MAM catch-up of each room. Each archive is a serial
 * queue (track.ts): the catch-up runs before the live messages that arrived
 * meanwhile, live and archive copies dedupe on the stanza-id, and the position
 * advances only past messages appended in order. MUC self-pings (XEP-0410)
 * notice a silent drop-out; the connection reconnects with jittered backoff.
 *
 * Out: deliver() renders the event (render.ts), sends it with our event id as
 * `id` and `origin-id`, and confirms it — in a MUC by the room's reflection
 * (whose stanza-id becomes a native id of the event), in 1:1 by the XEP-0198 ack.
 *
 * Encrypted messages (issue 26): normalise.ts turns them into the undecryptable
 * notice. Here the conversation is remembered as encrypted (state
 * `xmpp-encrypted:<name>`) before the event is appended, its sender told once
 * (per `encryptedNoticeIntervalMs`, in memory), and from then on nothing goes to
 * it in clear unless `allowPlaintextAfterEncrypted`.
 */
import type { Adapter, AdapterStatus, DeliveryContext, DeliveryResult, DeliveryTarget } from '../../src/core/adapter.js';
import type { LogEvent, Undecryptable } from '../../src/core/event.js';
import type { RoomLink } from '../../src/core/ports.js';
import { XmppConnection } from './client.js';
import { linkOptions, type LinkOptions } from './config.js';
import { XmppNotConnectedError } from './errors.js';
import { ID, ORIGIN_ID, lookupKey, scopedId, senderScope } from './ids.js';
import { carbonsEnable, discoFeatures, discoInfo } from './protocol.js';
import { expandPrefix, MAX_BODY_XML_BYTES, render } from './render.js';
import { encryptionSeen } from './encryption.js';
import { onStanza } from './inbound/dispatch.js';
import { refreshTargets } from './links.js';
import { scheduleCatchup } from './mam.js';
import { joinRoom, selfPingAll } from './muc.js';
import { adapterStatus, isReady, roomReady } from './status.js';
import { XmppAdapterState, sleep, type MucState, type XmppAdapterDeps } from './state.js';
import { NS, xml } from './xml.js';

export { XmppAdapterConfig, parseXmppConfig, linkOptions as validateXmppLink } from './config.js';
export { memoryCatchupStore, stateCatchupStore, type CatchupStore, type CatchupPosition } from './catchup.js';
export { prosodyConfigSnippet } from './prosody-config.js';
// The adapter type's descriptor (config, secrets, links, CLI): the one entry in src/runtime's adapter list.
import { describeXmppAdapter } from './descriptor.js';
export const xmppAdapter = describeXmppAdapter(createXmppAdapter);

export type { XmppAdapterDeps, XmppCounters } from './state.js';

export interface XmppAdapter extends Adapter {
  /** Drops the connection like a crash (no closing stream, no position flush). For tests. */
  abort(): void;
  /** Drops the TCP connection like a network failure; the adapter reconnects and resumes (XEP-0198). For tests. */
  interrupt(): void;
}

/** What we tell others we understand (disco#info on our full JID). */
const FEATURES = [NS.discoInfo, NS.correct, NS.retract, NS.reactions, NS.reply, NS.markers, NS.receipts, NS.oob, NS.styling, NS.ping, NS.sid];

export function createXmppAdapter(deps: XmppAdapterDeps): XmppAdapter {
  // The connection's callbacks run once it is online, long after `s` is assigned.
  const s: XmppAdapterState = new XmppAdapterState(deps, (state) =>
    new XmppConnection({
      config: state.config,
      log: state.log,
      features: FEATURES,
      onStanza: (stanza) => onStanza(s, stanza),
      onSession,
      onResumed: () => undefined,
      onDisconnect: () => {
        for (const room of rooms.values()) room.joining?.resolve({ ok: false, condition: 'disconnected' });
      },
    }),
  );
  const { name, log, config, account, sink, links, counters, encryptedConversations } = s;
  const { accountTrack, rooms, reflectionWaiters, reflected, sentIds, reactionSets, reactionNamespace, inFlight } = s;

  function track<T>(p: Promise<T>): Promise<T> {
    inFlight.add(p);
    void p.then(
      () => inFlight.delete(p),
      () => inFlight.delete(p),
    );
    return p;
  }

  // --- session

  function onSession(): void {
    const gen = ++s.generation;
    accountTrack.caughtUp = false;
    accountTrack.resyncPending = false;
    for (const room of rooms.values()) {
      room.joined = false;
      room.joining?.resolve({ ok: false, condition: 'new session' });
      room.track.caughtUp = false;
      room.track.resyncPending = false;
      room.nick = room.configuredNick;
    }
    void (async () => {
      try {
        const features = discoFeatures(await s.connection.request(discoInfo(account), config.iqTimeoutMs));
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
      if (s.accountFacts.mam) scheduleCatchup(s, accountTrack, gen);
      else {
        log.warn('the account has no archive (MAM): 1:1 messages sent while we were away are not recovered');
        accountTrack.caughtUp = true;
      }
      await s.connection.send(xml('presence')).catch(() => undefined);
      for (const room of rooms.values()) void joinRoom(s, room, gen);
    })().catch((err: unknown) => log.error({ err }, 'session setup failed'));
  }

  // --- out

  /** A reply's original: its quote, and its author's JID here (XEP-0461 `to`): the XMPP sender, else the bridge itself. */
  async function replyOriginal(event: LogEvent, to: string, room: MucState | undefined): Promise<{ quote?: { author: string; text: string }; author?: string }> {
    if (event.kind !== 'message' || !event.rel?.replyTo) return {};
    const original = await sink.getEvent(event.room, event.rel.replyTo).catch(() => undefined);
    if (!original || !('content' in original)) return {};
    const fromHere = original.origin.via === name && original.sender.proto === 'xmpp';
    const author = fromHere ? original.sender.native : room ? `${to}/${room.nick}` : account;
    return { quote: { author: original.sender.display ?? original.sender.uid, text: original.content.body }, author };
  }

  /** The set to send for a reaction: every remote sender's keys on the target, combined (kept in the state store when given). */
  async function reactionKeysFor(event: LogEvent, to: string): Promise<readonly string[] | undefined> {
    if (event.kind !== 'reaction') return undefined;
    const key = `${event.room}\0${to}\0${event.rel.reactsTo}`;
    let sets = reactionSets.get(key);
    if (!sets && deps.state) sets = parseReactionSets(await deps.state.get(reactionNamespace, key));
    sets ??= new Map<string, readonly string[]>();
    if (event.reaction.keys.length > 0) sets.set(event.sender.uid, event.reaction.keys);
    else sets.delete(event.sender.uid);
    reactionSets.set(key, sets);
    // Written before sending: a retry sends the same set, and a restart continues from it.
    if (deps.state) await deps.state.set(reactionNamespace, key, JSON.stringify(Object.fromEntries(sets)));
    return [...new Set([...sets.values()].flat())].slice(0, 64);
  }

  async function deliverEvent(event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
    if (event.origin.via === name) return { status: 'skipped', reason: 'came from this endpoint' };
    let options: LinkOptions;
    try {
      options = linkOptions(target.link);
    } catch (err) {
      return { status: 'rejected', reason: (err as Error).message };
    }
    const to = target.link.target.toLowerCase();
    if (!config.allowPlaintextAfterEncrypted && (event.kind === 'message' || event.kind === 'edit' || event.kind === 'reaction')) {
      let how: Undecryptable | undefined;
      try {
        how = await encryptionSeen(s, to);
      } catch (err) {
        return { status: 'retry', reason: `could not read whether ${to} uses encryption: ${(err as Error).message}` };
      }
      if (how) {
        counters.plaintextRefused++;
        return { status: 'rejected', reason: `${to} sent end-to-end encrypted messages (${how.reason}); the bridge cannot encrypt and sends it nothing in clear (allowPlaintextAfterEncrypted is off)` };
      }
    }
    if (!s.connection.online) return { status: 'retry', reason: 'not connected to the XMPP server' };
    const chat = options.type;
    const room = chat === 'groupchat' ? rooms.get(to) : undefined;
    // Banned: retrying cannot help; the dead-letter stream keeps the event for a replay once the ban is lifted.
    if (room?.gaveUp) return { status: 'rejected', reason: `${room.gaveUp} (${to})` };
    if (chat === 'groupchat' && !roomReady(s, room)) return { status: 'retry', reason: `not (yet) in the MUC ${to}`, afterMs: 1000 };
    if (chat === 'chat' && !accountTrack.caughtUp) return { status: 'retry', reason: 'catching up with the account archive', afterMs: 1000 };

    // A retry of something whose reflection (or archive copy) we have seen since: it arrived.
    const seenKey = `${to}\0${event.eventId}`;
    const seen = reflected.get(seenKey);
    if (seen) return { status: 'delivered', nativeIds: seen };

    const original = await replyOriginal(event, to, room);
    const rendered = render({
      event,
      chat,
      to,
      references: context.references,
      content: context.content,
      prefix: expandPrefix(config.relayPrefix, event.sender),
      quote: original.quote,
      replyAuthor: original.author,
      reactionKeys: await reactionKeysFor(event, to),
    });
    if (rendered.ok === 'skip') return { status: 'skipped', reason: rendered.reason };
    if (!rendered.ok) return { status: 'rejected', reason: rendered.reason };

    if (chat === 'chat') {
      const scope = senderScope(to, account);
      const nativeIds = { [ID]: scopedId(scope, event.eventId), [ORIGIN_ID]: scopedId(scope, event.eventId) };
      for (const [key, value] of Object.entries(nativeIds)) sentIds.set(`${event.room}\0${lookupKey(key, value)}`, event.eventId);
      try {
        await s.connection.sendConfirmed(rendered.stanza, config.deliveryTimeoutMs);
      } catch (err) {
        counters.deliveryRetries++;
        return { status: 'retry', reason: err instanceof Error ? err.message : String(err) };
      }
      counters.delivered++;
      return { status: 'delivered', nativeIds };
    }

    let timer: NodeJS.Timeout | undefined;
    const reflection = new Promise<Record<string, string> | undefined>((resolve) => {
      reflectionWaiters.set(seenKey, resolve);
      timer = setTimeout(() => resolve(undefined), config.deliveryTimeoutMs);
    });
    try {
      await s.connection.send(rendered.stanza);
      const ids = await reflection;
      if (!ids) {
        counters.reflectionTimeouts++;
        counters.deliveryRetries++;
        return { status: 'retry', reason: 'the room did not reflect the message in time' };
      }
      counters.delivered++;
      return { status: 'delivered', nativeIds: ids };
    } catch (err) {
      counters.deliveryRetries++;
      return { status: 'retry', reason: err instanceof XmppNotConnectedError ? err.message : `send failed: ${(err as Error).message}` };
    } finally {
      clearTimeout(timer);
      reflectionWaiters.delete(seenKey);
    }
  }

  return {
    name,
    protocol: 'xmpp',
    textFormat: 'xep0393',
    maxBodyBytes: MAX_BODY_XML_BYTES,

    async start() {
      if (s.started) return;
      s.started = true;
      if (s.stopping) {
        // Started again after a stop (this replica won the connection lease back): a new session.
        // Another replica may have moved the catch-up positions meanwhile: read them again.
        s.stopping = false;
        s.reconnect();
        for (const t of [accountTrack, ...[...rooms.values()].map((r) => r.track)]) t.reload();
        // Another replica may have seen encrypted messages meanwhile.
        encryptedConversations.clear();
      }
      refreshTargets(s);
      s.unwatch = links.onChange(() => refreshTargets(s));
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
    },

    async stop() {
      if (!s.started || s.stopping) return;
      s.stopping = true;
      // Work of this session ends here, also once a later start() has cleared `stopping`.
      s.generation++;
      s.unwatch?.();
      clearInterval(s.pingTimer);
      for (const room of rooms.values()) clearTimeout(room.rejoinTimer);
      await Promise.race([Promise.allSettled([...inFlight]), sleep(config.deliveryTimeoutMs)]);
      await s.connection.stop(config.streamTimeoutMs);
      // What was received is appended and its position written; the rest comes back by catch-up.
      const tracks = [accountTrack, ...[...rooms.values()].map((r) => r.track)];
      await Promise.race([Promise.allSettled(tracks.map((t) => t.idle())), sleep(config.ingestRetryMs + 1000)]);
      await Promise.allSettled(tracks.map((t) => t.flush()));
      s.started = false;
    },

    interrupt() {
      s.connection.interrupt();
    },

    abort() {
      s.stopping = true;
      s.started = false;
      s.unwatch?.();
      clearInterval(s.pingTimer);
      for (const room of rooms.values()) clearTimeout(room.rejoinTimer);
      s.connection.abort();
    },

    status(): AdapterStatus {
      return adapterStatus(s);
    },

    deliver(event, target, context) {
      if (s.stopping) return Promise.resolve({ status: 'retry', reason: 'the XMPP adapter is stopping', afterMs: 1000 });
      return track(deliverEvent(event, target, context));
    },
  };
}

function parseReactionSets(raw: string | undefined): Map<string, readonly string[]> | undefined {
  if (raw === undefined) return undefined;
  try {
    const parsed = JSON.parse(raw) as unknown;
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const sets = new Map<string, readonly string[]>();
    for (const [sender, keys] of Object.entries(parsed)) {
      if (Array.isArray(keys) && keys.every((k) => typeof k === 'string')) sets.set(sender, keys as string[]);
    }
    return sets;
  } catch {
    return undefined;
  }
}

/** For the runtime's admin API: true when the link is a valid XMPP link. */
export function isValidXmppLink(link: RoomLink): boolean {
  try {
    linkOptions(link);
    return true;
  } catch {
    return false;
  }
}

