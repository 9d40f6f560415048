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
import { randomUUID } from 'node:crypto';
import type { Adapter, AdapterStatus, DeliveryContext, DeliveryResult, DeliveryTarget } from '../../src/core/adapter.js';
import type { LogEvent, Undecryptable } from '../../src/core/event.js';
import type { RoomLink } from '../../src/core/ports.js';
import { XmppConnection, backoffDelay } from './client.js';
import { linkOptions, type LinkOptions, type RoomCreation } from './config.js';
import { XmppNotConnectedError, stanzaErrorCondition } from './errors.js';
import { ID, ORIGIN_ID, lookupKey, scopedId, senderScope } from './ids.js';
import { bareJid, openEnvelope, type Normalised, type Source } from './normalise.js';
import { carbonsEnable, discoFeatures, discoInfo, formFieldNames, mamQuery, mucConfigGet, mucConfigSubmit, mucJoin, mucLeave, parseFin, parseMucPresence, selfPing, selfPingVerdict, type MamFin, type MucPresence } from './protocol.js';
import { expandPrefix, MAX_BODY_XML_BYTES, render } from './render.js';
import { ArchiveTrack } from './track.js';
import { encryptionSeen } from './encryption.js';
import { handleParsed, normalise, withoutEcho } from './inbound/ingest.js';
import { adapterStatus, drop, isReady, roomReady } from './status.js';
import { XmppAdapterState, sleep, type MucState, type PendingQuery, type Target, type XmppAdapterDeps } from './state.js';
import { NS, xml, type XmlElement } from './xml.js';

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

/** Room configuration fields that turn MUC archiving (MAM) on: Prosody's, ejabberd's. */
const ROOM_ARCHIVING_FIELDS = ['muc#roomconfig_enablearchiving', 'mam'];

/** how far before the last position's time the item-not-found fallback starts, for clock differences */
const FALLBACK_MARGIN_MS = 10 * 60_000;

export function createXmppAdapter(deps: XmppAdapterDeps): XmppAdapter {
  // The connection's callbacks run once it is online, long after `s` is assigned.
  const s: XmppAdapterState = new XmppAdapterState(deps, (state) =>
    new XmppConnection({
      config: state.config,
      log: state.log,
      features: FEATURES,
      onStanza,
      onSession,
      onResumed: () => undefined,
      onDisconnect: () => {
        for (const room of rooms.values()) room.joining?.resolve({ ok: false, condition: 'disconnected' });
      },
    }),
  );
  const { name, log, config, account, sink, links, store, counters, encryptedConversations } = s;
  const { accountTrack, rooms, pendingQueries, reflectionWaiters, reflected, sentIds, reactionSets, reactionNamespace, inFlight } = s;

  function track<T>(p: Promise<T>): Promise<T> {
    inFlight.add(p);
    void p.then(
      () => inFlight.delete(p),
      () => inFlight.delete(p),
    );
    return p;
  }

  // --- links

  function refreshTargets(): void {
    const next = new Map<string, Target[]>();
    for (const { room, link } of links.linksOf(name)) {
      let options: LinkOptions;
      try {
        options = linkOptions(link);
      } catch (err) {
        log.error({ room, target: link.target, err: (err as Error).message }, 'ignoring an invalid XMPP room link');
        continue;
      }
      const jid = link.target.toLowerCase();
      next.set(jid, [...(next.get(jid) ?? []), { room, link, options }]);
    }
    s.targets = next;
    const wanted = new Map<string, { nick: string; password: string | undefined; create: RoomCreation }>();
    for (const [jid, ts] of next) {
      const muc = ts.find((t) => t.options.type === 'groupchat');
      if (muc && muc.options.type === 'groupchat') wanted.set(jid, { nick: muc.options.nick ?? config.mucNick, password: muc.options.password, create: muc.options.create });
    }
    for (const [jid, want] of wanted) {
      const existing = rooms.get(jid);
      if (existing && existing.configuredNick === want.nick) {
        existing.password = want.password;
        existing.create = want.create;
        continue;
      }
      if (existing) leaveRoom(existing);
      const state: MucState = {
        jid,
        configuredNick: want.nick,
        nick: want.nick,
        password: want.password,
        create: want.create,
        joined: false,
        joining: undefined,
        occupantId: undefined,
        facts: undefined,
        track: new ArchiveTrack(jid, store, log),
        rejoinTimer: undefined,
        rejoinAttempts: 0,
        lastSelfPing: undefined,
        gaveUp: undefined,
        nickKeys: new Map(),
        nickKeySeq: 0,
        renamedTo: new Set(),
        present: new Set(),
      };
      rooms.set(jid, state);
      if (s.connection.online) void joinRoom(state, s.generation);
    }
    for (const [jid, state] of rooms) if (!wanted.has(jid)) leaveRoom(state);
  }

  function leaveRoom(state: MucState): void {
    rooms.delete(state.jid);
    clearTimeout(state.rejoinTimer);
    if (state.joined && s.connection.online) s.connection.send(mucLeave(state.jid, state.nick)).catch(() => undefined);
    state.joined = false;
    state.joining?.resolve({ ok: false, condition: 'left' });
    log.info({ room: state.jid }, 'left MUC (link removed)');
  }

  // --- normalisation context

  // --- inbound

  /** Queues a live message on its archive; it is normalised when its turn comes (room facts are known by then). */
  function enqueueLive(t: ArchiveTrack, message: XmlElement, source: Source, early?: Normalised): void {
    t.enqueue(
      async () => {
        if (t.resyncPending) {
          // The archive is read again from the last position (see onTrackFailure); this message comes with it, in order.
          counters.deferred++;
          return;
        }
        const n = early ?? normalise(s, message, source);
        if (n.ok === 'skip') return;
        if (!n.ok) {
          drop(s, n.reason, n.detail, { from: message.attrs['from'] });
          return;
        }
        await handleParsed(s, n.value, t, t.caughtUp);
      },
      (err) => onTrackFailure(t, err),
    );
  }

  /** An append failed for good: stop advancing the position and read the archive again from it, later. */
  function onTrackFailure(t: ArchiveTrack, err: unknown): void {
    log.error({ err, archive: t.archive }, 'could not append an XMPP message; the archive will be read again from the last position');
    t.caughtUp = false;
    const archived = t === accountTrack ? s.accountFacts.mam : rooms.get(t.archive)?.facts?.mam === true;
    // Without an archive there is nothing to read again: later messages go on live.
    if (!archived) {
      t.caughtUp = true;
      return;
    }
    t.resyncPending = true;
    const gen = s.generation;
    setTimeout(() => {
      if (gen !== s.generation || s.stopping || t.catchingUp) return;
      if (t === accountTrack) scheduleCatchup(t, gen);
      else {
        const room = rooms.get(t.archive);
        if (room?.joined && room.track === t) scheduleCatchup(t, gen);
      }
    }, backoffDelay(1, config.reconnect.minMs, config.reconnect.maxMs)).unref();
  }

  function onMessage(stanza: XmlElement): void {
    counters.received++;
    const env = openEnvelope(stanza, account);
    if (env.ok === 'skip') return;
    if (!env.ok) {
      drop(s, env.reason, env.detail, { from: stanza.attrs['from'] });
      return;
    }
    if (env.type === 'archive-result') {
      const q = pendingQueries.get(env.queryId);
      if (!q || q.archive !== env.from) {
        drop(s, 'archive-stranger', q ? `a result for the archive of ${q.archive} from ${env.from}` : `a result for a query we did not make, from ${env.from}`, { from: stanza.attrs['from'] });
        return;
      }
      q.results.push({ message: env.message, resultId: env.resultId, stamp: env.stamp });
      return;
    }
    const message = env.message;
    if (message.attrs['type'] === 'groupchat') {
      const room = rooms.get(bareJid(message.attrs['from']) ?? '');
      if (!room) {
        drop(s, 'no-room', `a groupchat message from ${message.attrs['from']}, a room we are not in`);
        return;
      }
      let early: Normalised | undefined;
      // Our reflection confirms a delivery: answer the waiting deliver() now, not after the queue.
      if (room.facts && reflectionWaiters.size > 0) {
        early = normalise(s, message, env.source);
        if (early.ok === true && early.value.fromUs && early.value.echoOf !== undefined) {
          const key = `${room.jid}\0${early.value.echoOf}`;
          const ids = withoutEcho(early.value.ids);
          reflected.set(key, ids);
          reflectionWaiters.get(key)?.(ids);
        }
      }
      enqueueLive(room.track, message, env.source, early);
      return;
    }
    enqueueLive(accountTrack, message, env.source);
  }

  function onPresence(stanza: XmlElement): void {
    const p = parseMucPresence(stanza);
    if (!p) return;
    const room = rooms.get(p.room);
    if (!room) return;
    if (p.type === 'error') {
      if (room.joining && p.nick === room.nick) room.joining.resolve({ ok: false, condition: p.condition });
      return;
    }
    if (!p.self) followNick(room, p);
    if (!p.self && !(room.joining && p.nick === room.nick && p.type === 'available')) return;
    if (p.type === 'available') {
      if (p.occupantId !== undefined) room.occupantId = p.occupantId;
      room.nick = p.nick;
      if (room.joining) {
        // The join answer: queue the room's catch-up now, before any stanza after it (in the same read) is handled.
        enterRoom(room, room.joining.gen, p.codes.has('201'));
        room.joining.resolve({ ok: true });
      }
      return;
    }
    // Our own unavailable presence: a nick change (303), or we are out of the room.
    if (p.codes.has('303') && p.newNick) {
      room.nick = p.newNick;
      return;
    }
    if (!room.joined) return;
    room.joined = false;
    if (p.codes.has('301')) {
      room.gaveUp = 'banned from the room';
      log.error({ room: room.jid }, 'banned from the MUC; not rejoining');
      return;
    }
    log.warn({ room: room.jid, codes: [...p.codes] }, 'removed from the MUC; rejoining');
    scheduleRejoin(room);
  }

  /** Keeps the nick history of other occupants (see MucState.nickKeys). */
  function followNick(room: MucState, p: MucPresence): void {
    if (p.type === 'unavailable' && p.codes.has('303') && p.newNick !== undefined && p.newNick !== p.nick) {
      const key = room.nickKeys.get(p.nick) ?? p.nick;
      // The old nick keeps its entry: its messages still queued are from the same occupant.
      room.nickKeys.set(p.nick, key);
      room.nickKeys.set(p.newNick, key);
      room.renamedTo.add(p.newNick);
      room.present.delete(p.nick);
      log.debug({ room: room.jid, from: p.nick, to: p.newNick, key }, 'MUC occupant changed nick');
      return;
    }
    if (p.type === 'unavailable') room.present.delete(p.nick);
    if (p.type !== 'available' || room.present.has(p.nick)) return;
    room.present.add(p.nick);
    // The available presence that follows a 303 is the renamed occupant's own.
    if (room.renamedTo.delete(p.nick)) return;
    // Before our self-presence: the occupant list of the join, people we knew or never saw.
    if (!room.joined) return;
    if (room.nickKeys.has(p.nick) || [...room.nickKeys.values()].includes(p.nick)) {
      // Someone new on a nick that names another occupant's key.
      const key = `${p.nick}#${++room.nickKeySeq}`;
      room.nickKeys.set(p.nick, key);
      log.debug({ room: room.jid, nick: p.nick, key }, 'a newcomer on a nick with a history; it gets a key of its own');
    }
  }

  function onStanza(stanza: XmlElement): void {
    if (stanza.is('message')) onMessage(stanza);
    else if (stanza.is('presence')) onPresence(stanza);
  }

  // --- catch-up (MAM)

  async function mamPage(archive: string, q: { after?: string | undefined; before?: string | undefined; start?: number | undefined; max: number }): Promise<{ results: PendingQuery['results']; fin: MamFin }> {
    const queryId = randomUUID();
    const pending: PendingQuery = { archive, results: [] };
    pendingQueries.set(queryId, pending);
    try {
      const reply = await s.connection.request(mamQuery({ to: archive === account ? undefined : archive, queryId, ...q }), config.iqTimeoutMs);
      const fin = parseFin(reply) ?? { complete: true, first: undefined, last: undefined };
      return { results: pending.results, fin };
    } finally {
      pendingQueries.delete(queryId);
    }
  }

  async function catchUp(t: ArchiveTrack, gen: number): Promise<void> {
    if (gen !== s.generation || !s.connection.online) return;
    const t0 = Date.now();
    let handled = 0;
    const position = await t.load();
    let after: string | undefined = position?.id;
    let start: number | undefined;
    if (position && position.id === undefined) {
      // The archive was empty at first sight: everything archived since then (less a margin for clocks; the log dedupes).
      start = Math.max(position.ts - FALLBACK_MARGIN_MS, Date.now() - config.catchupMaxAgeMs);
    }
    if (!position) {
      if (config.initialHistoryMs > 0) start = Date.now() - config.initialHistoryMs;
      else {
        // First time: no history, just the archive's newest id, so nothing after it is missed later.
        // An empty archive leaves the time of this query instead: the next catch-up reads from then.
        const { results } = await mamPage(t.archive, { before: '', max: 1 });
        const newest = results.at(-1);
        t.advance(newest ? { id: newest.resultId, ts: newest.stamp ?? Date.now() } : { ts: t0 });
        t.caughtUp = true;
        log.info({ archive: t.archive, newest: newest?.resultId }, 'archive seen for the first time; following it from its newest entry');
        return;
      }
    }
    for (;;) {
      if (gen !== s.generation || s.stopping) return;
      let page: Awaited<ReturnType<typeof mamPage>>;
      try {
        page = await mamPage(t.archive, { after, start, max: config.mamPageSize });
      } catch (err) {
        if (stanzaErrorCondition(err) === 'item-not-found' && after !== undefined && position) {
          start = Math.max(position.ts - FALLBACK_MARGIN_MS, Date.now() - config.catchupMaxAgeMs);
          log.warn({ archive: t.archive, after, since: new Date(start).toISOString() }, 'the last archived id is gone from the archive; catching up by time');
          after = undefined;
          continue;
        }
        throw err;
      }
      for (const r of page.results) {
        counters.archived++;
        const n = normalise(s, r.message, { kind: 'archive', archive: t.archive, resultId: r.resultId, stamp: r.stamp });
        if (n.ok === 'skip') {
          t.advance({ id: r.resultId, ts: r.stamp ?? Date.now() });
          continue;
        }
        if (!n.ok) {
          drop(s, n.reason, n.detail, { archive: t.archive });
          t.advance({ id: r.resultId, ts: r.stamp ?? Date.now() });
          continue;
        }
        await handleParsed(s, n.value, t, true);
        handled++;
      }
      const last = page.fin.last ?? page.results.at(-1)?.resultId;
      if (page.fin.complete || page.results.length === 0 || last === undefined) break;
      after = last;
    }
    if (gen !== s.generation) return;
    // Nothing archived in the initial history window: the next catch-up reads from the time of this one.
    if (t.current === undefined) t.advance({ ts: t0 });
    t.caughtUp = true;
    t.resyncPending = false;
    counters.catchups++;
    log.info({ archive: t.archive, messages: handled, ms: Date.now() - t0 }, 'caught up with the archive');
  }

  /** Runs a catch-up inside the track's queue; on failure it is tried again later. */
  async function runCatchup(t: ArchiveTrack, gen: number): Promise<void> {
    t.catchingUp = true;
    try {
      await catchUp(t, gen);
    } catch (err) {
      counters.catchupFailures++;
      if (gen !== s.generation || s.stopping) return;
      // Live messages wait for the next try, which reads them from the archive in order.
      t.resyncPending = true;
      log.warn({ err, archive: t.archive }, 'catch-up failed; trying again');
      setTimeout(() => {
        if (gen !== s.generation || s.stopping || t.catchingUp || t.caughtUp) return;
        if (t !== accountTrack && !rooms.get(t.archive)?.joined) return;
        scheduleCatchup(t, gen);
      }, backoffDelay(2, config.reconnect.minMs, config.reconnect.maxMs)).unref();
    } finally {
      t.catchingUp = false;
    }
  }

  function scheduleCatchup(t: ArchiveTrack, gen: number): void {
    t.catchingUp = true;
    t.enqueue(
      () => runCatchup(t, gen),
      (err) => log.error({ err, archive: t.archive }, 'catch-up failed'),
    );
  }

  // --- MUC

  async function joinRoom(room: MucState, gen: number): Promise<void> {
    if (room.joining || room.gaveUp || !s.connection.online || gen !== s.generation) return;
    room.present.clear();
    room.renamedTo.clear();
    const result = await new Promise<{ ok: boolean; condition?: string | undefined }>((resolve) => {
      const timer = setTimeout(() => resolve({ ok: false, condition: 'timeout' }), config.iqTimeoutMs);
      room.joining = {
        gen,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      s.connection.send(mucJoin(room.jid, room.nick, room.password)).catch((err: unknown) => room.joining?.resolve({ ok: false, condition: (err as Error).message }));
    });
    room.joining = undefined;
    if (gen !== s.generation || rooms.get(room.jid) !== room) return;
    if (!result.ok) {
      if (result.condition === 'conflict' && room.nick.length < room.configuredNick.length + 3) {
        room.nick = `${room.nick}_`;
        log.warn({ room: room.jid, nick: room.nick }, 'nick taken in the MUC; trying another');
        return joinRoom(room, gen);
      }
      if (result.condition === 'forbidden') room.gaveUp = 'banned from the room';
      log.error({ room: room.jid, condition: result.condition }, 'could not join the MUC');
      if (!room.gaveUp) scheduleRejoin(room);
    }
    // Joined: enterRoom() ran when the answer came.
  }

  /** We are in the room (our self-presence answered the join): room facts and the catch-up, queued ahead of anything that follows. */
  function enterRoom(room: MucState, gen: number, created: boolean): void {
    if (gen !== s.generation || rooms.get(room.jid) !== room) return;
    room.joined = true;
    room.rejoinAttempts = 0;
    counters.joins++;
    log.info({ room: room.jid, nick: room.nick, occupantId: room.occupantId }, 'joined MUC');
    // Room facts, then the catch-up, in one task ahead of the live messages that arrive from now
    // on: those are normalised with the facts and appended after the archived ones.
    room.track.caughtUp = false;
    room.track.catchingUp = true;
    room.track.enqueue(
      async () => {
        // We created the room (201): it stays locked to everyone else until we configure it.
        if (created) await configureRoom(room);
        try {
          const features = discoFeatures(await s.connection.request(discoInfo(room.jid), config.iqTimeoutMs));
          room.facts = { stanzaIds: features.has(NS.sid), occupantIds: features.has(NS.occupantId), mam: features.has(NS.mam) };
        } catch (err) {
          log.warn({ err, room: room.jid }, 'disco#info of the MUC failed; assuming no stanza-ids, occupant ids or archive');
          room.facts = { stanzaIds: false, occupantIds: false, mam: false };
        }
        if (!room.facts.mam) {
          log.warn({ room: room.jid }, 'the MUC has no archive (MAM): messages sent while we were away are not recovered');
          room.track.catchingUp = false;
          room.track.caughtUp = true;
          return;
        }
        await runCatchup(room.track, gen);
      },
      (err) => log.error({ err, room: room.jid }, 'MUC setup failed'),
    );
  }

  /**
   * Unlocks a room we created through its own configuration form: fetched, then submitted with
   * those of the wanted fields it offers (the link's settings, and archiving, which the catch-up
   * needs); a form the server cannot give makes it an instant room.
   */
  async function configureRoom(room: MucState): Promise<void> {
    const wanted = new Map<string, string>();
    const { persistent, membersOnly, name: roomName } = room.create;
    if (persistent !== undefined) wanted.set('muc#roomconfig_persistentroom', persistent ? '1' : '0');
    if (membersOnly !== undefined) wanted.set('muc#roomconfig_membersonly', membersOnly ? '1' : '0');
    if (roomName !== undefined) wanted.set('muc#roomconfig_roomname', roomName);
    const fields = new Map<string, string>();
    try {
      const offered = formFieldNames(await s.connection.request(mucConfigGet(room.jid), config.iqTimeoutMs));
      for (const [field, value] of wanted) {
        if (offered.has(field)) fields.set(field, value);
        else log.warn({ room: room.jid, field }, 'the server’s room configuration form has no such field; left to its default');
      }
      // Archiving has no standard field name: each server's own, whichever the form offers.
      const archiving = ROOM_ARCHIVING_FIELDS.find((f) => offered.has(f));
      if (archiving !== undefined) fields.set(archiving, '1');
      else log.warn({ room: room.jid, offered: [...offered] }, 'the room configuration form offers no archiving option; the server decides whether the room is archived (without it, messages sent while we are away are not recovered)');
    } catch (err) {
      log.warn({ err, room: room.jid }, 'could not read the room configuration form; creating an instant room');
    }
    try {
      await s.connection.request(mucConfigSubmit(room.jid, fields), config.iqTimeoutMs);
      log.info({ room: room.jid, configured: Object.fromEntries(fields) }, fields.size > 0 ? 'created the MUC with the link’s configuration' : 'created the MUC as an instant room');
    } catch (err) {
      log.error({ err, room: room.jid }, 'could not configure the MUC we created; it stays locked until the server’s lock runs out');
    }
  }

  function scheduleRejoin(room: MucState): void {
    clearTimeout(room.rejoinTimer);
    const delay = backoffDelay(room.rejoinAttempts++, config.reconnect.minMs, config.reconnect.maxMs);
    room.rejoinTimer = setTimeout(() => {
      room.rejoinTimer = undefined;
      if (s.stopping || rooms.get(room.jid) !== room || room.joined) return;
      counters.rejoins++;
      room.nick = room.configuredNick;
      void joinRoom(room, s.generation);
    }, delay);
    room.rejoinTimer.unref();
  }

  async function selfPingAll(): Promise<void> {
    if (!s.connection.online) return;
    await Promise.all(
      [...rooms.values()]
        .filter((r) => r.joined)
        .map(async (room) => {
          counters.selfPings++;
          let verdict: 'joined' | 'not-joined' | 'unknown';
          try {
            await s.connection.request(selfPing(room.jid, room.nick), config.iqTimeoutMs);
            verdict = 'joined';
          } catch (err) {
            verdict = selfPingVerdict(stanzaErrorCondition(err));
          }
          room.lastSelfPing = Date.now();
          if (verdict === 'not-joined' && room.joined && rooms.get(room.jid) === room) {
            counters.selfPingDropouts++;
            log.warn({ room: room.jid }, 'MUC self-ping: we are no longer in the room; rejoining');
            room.joined = false;
            room.facts = undefined;
            void joinRoom(room, s.generation);
          }
        }),
    );
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
      if (s.accountFacts.mam) scheduleCatchup(accountTrack, gen);
      else {
        log.warn('the account has no archive (MAM): 1:1 messages sent while we were away are not recovered');
        accountTrack.caughtUp = true;
      }
      await s.connection.send(xml('presence')).catch(() => undefined);
      for (const room of rooms.values()) void joinRoom(room, gen);
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
      refreshTargets();
      s.unwatch = links.onChange(() => refreshTargets());
      s.connection.start();
      if (config.selfPingIntervalMs > 0) {
        s.pingTimer = setInterval(() => {
          selfPingAll().catch((err: unknown) => log.warn({ err }, 'MUC self-ping failed'));
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

