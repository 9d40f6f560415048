/**
 * The MUCs the bridge account is in (XEP-0045): joining (a taken nick gets an
 * `_`, a ban ends the tries), entering (room facts by disco#info, then the
 * room's catch-up, queued ahead of the live messages that follow the join
 * answer), configuring a room we created, rejoining with jittered backoff,
 * leaving when the link goes, and XEP-0410 self-pings that notice a silent
 * drop-out. The join answer itself arrives as presence (inbound/presence.ts).
 */
import { backoffDelay } from '../../src/core/backoff.js';
import type { RoomCreation } from './config.js';
import { stanzaErrorCondition } from './errors.js';
import { runCatchup } from './mam.js';
import { discoFeatures, discoInfo, formFieldNames, mucConfigGet, mucConfigSubmit, mucJoin, mucLeave, selfPing, selfPingVerdict } from './protocol.js';
import type { JoinResult, MucState, XmppAdapterState } from './state.js';
import { ArchiveTrack } from './track.js';
import { NS } from './xml.js';

/** Room configuration fields that turn MUC archiving (MAM) on: Prosody's, ejabberd's. */
const ROOM_ARCHIVING_FIELDS = ['muc#roomconfig_enablearchiving', 'mam'];

/** A room a link wants us in, not joined yet. */
export function newRoom(s: XmppAdapterState, jid: string, want: { nick: string; password: string | undefined; create: RoomCreation }): MucState {
  return {
    jid,
    configuredNick: want.nick,
    nick: want.nick,
    password: want.password,
    create: want.create,
    joined: false,
    joining: undefined,
    occupantId: undefined,
    facts: undefined,
    track: new ArchiveTrack(jid, s.store, s.log),
    rejoinTimer: undefined,
    rejoinAttempts: 0,
    lastSelfPing: undefined,
    gaveUp: undefined,
    nickKeys: new Map(),
    nickKeySeq: 0,
    renamedTo: new Set(),
    present: new Set(),
    realJids: new Map(),
  };
}

/** The link is gone: out of the room, and no more rejoins. */
export function leaveRoom(s: XmppAdapterState, room: MucState): void {
  s.rooms.delete(room.jid);
  clearTimeout(room.rejoinTimer);
  if (room.joined && s.connection.online) s.connection.send(mucLeave(room.jid, room.nick)).catch(() => undefined);
  room.joined = false;
  room.joining?.resolve({ ok: false, condition: 'left' });
  s.log.info({ room: room.jid }, 'left MUC (link removed)');
}

/** Joins (presence to the room); the answer comes as presence and ends in enterRoom(); a failure schedules a rejoin. */
export async function joinRoom(s: XmppAdapterState, room: MucState, gen: number): Promise<void> {
  if (room.joining || room.gaveUp || !s.connection.online || gen !== s.generation) return;
  room.present.clear();
  room.realJids.clear();
  room.renamedTo.clear();
  const result = await new Promise<JoinResult>((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, condition: 'timeout' }), s.config.iqTimeoutMs);
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
  if (gen !== s.generation || s.rooms.get(room.jid) !== room) return;
  if (!result.ok) {
    if (result.condition === 'conflict' && room.nick.length < room.configuredNick.length + 3) {
      room.nick = `${room.nick}_`;
      s.log.warn({ room: room.jid, nick: room.nick }, 'nick taken in the MUC; trying another');
      return joinRoom(s, room, gen);
    }
    if (result.condition === 'forbidden') room.gaveUp = 'banned from the room';
    s.log.error({ room: room.jid, condition: result.condition }, 'could not join the MUC');
    if (!room.gaveUp) scheduleRejoin(s, room);
  }
  // Joined: enterRoom() ran when the answer came.
}

/** We are in the room (our self-presence answered the join): room facts and the catch-up, queued ahead of anything that follows. */
export function enterRoom(s: XmppAdapterState, room: MucState, gen: number, created: boolean): void {
  if (gen !== s.generation || s.rooms.get(room.jid) !== room) return;
  room.joined = true;
  room.rejoinAttempts = 0;
  s.counters.joins++;
  s.log.info({ room: room.jid, nick: room.nick, occupantId: room.occupantId }, 'joined MUC');
  // Room facts, then the catch-up, in one task ahead of the live messages that arrive from now
  // on: those are normalised with the facts and appended after the archived ones.
  room.track.caughtUp = false;
  room.track.catchingUp = true;
  room.track.enqueue(
    async () => {
      // We created the room (201): it stays locked to everyone else until we configure it.
      if (created) await configureRoom(s, room);
      try {
        const features = discoFeatures(await s.connection.request(discoInfo(room.jid), s.config.iqTimeoutMs));
        room.facts = { stanzaIds: features.has(NS.sid), occupantIds: features.has(NS.occupantId), mam: features.has(NS.mam), omemo: features.has('muc_membersonly') && features.has('muc_nonanonymous') };
      } catch (err) {
        s.log.warn({ err, room: room.jid }, 'disco#info of the MUC failed; assuming no stanza-ids, occupant ids or archive');
        room.facts = { stanzaIds: false, occupantIds: false, mam: false, omemo: false };
      }
      if (!room.facts.mam) {
        s.log.warn({ room: room.jid }, 'the MUC has no archive (MAM): messages sent while we were away are not recovered');
        room.track.catchingUp = false;
        room.track.caughtUp = true;
        return;
      }
      await runCatchup(s, room.track, gen);
    },
    (err) => s.log.error({ err, room: room.jid }, 'MUC setup failed'),
  );
}

/**
 * Unlocks a room we created through its own configuration form: fetched, then submitted with
 * those of the wanted fields it offers (the link's settings, and archiving, which the catch-up
 * needs); a form the server cannot give makes it an instant room.
 */
async function configureRoom(s: XmppAdapterState, room: MucState): Promise<void> {
  const wanted = new Map<string, string>();
  const { persistent, membersOnly, name: roomName } = room.create;
  if (persistent !== undefined) wanted.set('muc#roomconfig_persistentroom', persistent ? '1' : '0');
  if (membersOnly !== undefined) wanted.set('muc#roomconfig_membersonly', membersOnly ? '1' : '0');
  if (roomName !== undefined) wanted.set('muc#roomconfig_roomname', roomName);
  const fields = new Map<string, string>();
  try {
    const offered = formFieldNames(await s.connection.request(mucConfigGet(room.jid), s.config.iqTimeoutMs));
    for (const [field, value] of wanted) {
      if (offered.has(field)) fields.set(field, value);
      else s.log.warn({ room: room.jid, field }, 'the server’s room configuration form has no such field; left to its default');
    }
    // Archiving has no standard field name: each server's own, whichever the form offers.
    const archiving = ROOM_ARCHIVING_FIELDS.find((f) => offered.has(f));
    if (archiving !== undefined) fields.set(archiving, '1');
    else s.log.warn({ room: room.jid, offered: [...offered] }, 'the room configuration form offers no archiving option; the server decides whether the room is archived (without it, messages sent while we are away are not recovered)');
  } catch (err) {
    s.log.warn({ err, room: room.jid }, 'could not read the room configuration form; creating an instant room');
  }
  try {
    await s.connection.request(mucConfigSubmit(room.jid, fields), s.config.iqTimeoutMs);
    s.log.info({ room: room.jid, configured: Object.fromEntries(fields) }, fields.size > 0 ? 'created the MUC with the link’s configuration' : 'created the MUC as an instant room');
  } catch (err) {
    s.log.error({ err, room: room.jid }, 'could not configure the MUC we created; it stays locked until the server’s lock runs out');
  }
}

export function scheduleRejoin(s: XmppAdapterState, room: MucState): void {
  clearTimeout(room.rejoinTimer);
  const delay = backoffDelay(room.rejoinAttempts++, s.config.reconnect.minMs, s.config.reconnect.maxMs);
  room.rejoinTimer = setTimeout(() => {
    room.rejoinTimer = undefined;
    if (s.stopping || s.rooms.get(room.jid) !== room || room.joined) return;
    s.counters.rejoins++;
    room.nick = room.configuredNick;
    void joinRoom(s, room, s.generation);
  }, delay);
  room.rejoinTimer.unref();
}

export async function selfPingAll(s: XmppAdapterState): Promise<void> {
  if (!s.connection.online) return;
  await Promise.all(
    [...s.rooms.values()]
      .filter((r) => r.joined)
      .map(async (room) => {
        s.counters.selfPings++;
        let verdict: 'joined' | 'not-joined' | 'unknown';
        try {
          await s.connection.request(selfPing(room.jid, room.nick), s.config.iqTimeoutMs);
          verdict = 'joined';
        } catch (err) {
          verdict = selfPingVerdict(stanzaErrorCondition(err));
        }
        room.lastSelfPing = Date.now();
        if (verdict === 'not-joined' && room.joined && s.rooms.get(room.jid) === room) {
          s.counters.selfPingDropouts++;
          s.log.warn({ room: room.jid }, 'MUC self-ping: we are no longer in the room; rejoining');
          room.joined = false;
          room.facts = undefined;
          void joinRoom(s, room, s.generation);
        }
      }),
  );
}
