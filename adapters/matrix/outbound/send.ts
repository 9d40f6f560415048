/**
 * What every outbound handler needs: who speaks (the sender's ghost in
 * appservice mode, the bot otherwise), how the sender is rendered, and the
 * two writes — PUT /send/{type}/{txnId} and PUT /redact/{id}/{txnId}, with
 * our event id as the txnId so a retried delivery is a retransmission.
 */
import type { DraftOf, EventKind, LogEvent, Positioned } from '../../../src/core/event.js';
import { mxPath, type JsonObject } from '../client.js';
import { isMatrixApiError, MatrixApiError, MatrixEncryptedRoomError, MatrixNotJoinedError } from '../errors.js';
import { expandPrefix, type RenderOptions } from '../render.js';
import { cryptoUnavailable } from '../crypto/session.js';
import { checkEncryptionNow, joinRoom, roomEncryptionSettings } from '../rooms.js';
import type { MatrixAdapterState } from '../state.js';

export type Logged<K extends EventKind> = DraftOf<K> & Positioned;

export interface Speaker {
  /** the Matrix user the event is sent as */
  readonly userId: string;
  /** set when asserting a ghost's identity (appservice mode) */
  readonly asUser?: string;
  /** appservice mode, encrypted room: the bridge bot relays for the sender (its name in the body) */
  readonly relay?: boolean;
  /** the room's encryption was read for this send already */
  readonly encryptionChecked?: boolean;
}

/** The text put before what the bridge bot relays for a ghost into an encrypted room (appservice mode). */
export const RELAY_PREFIX = '<{{display}}> ';

/**
 * Who speaks: the sender's ghost (joined, named) in appservice mode, the bot
 * otherwise. Into an end-to-end encrypted room in appservice mode the bridge
 * bot relays instead, with the sender's name in the body ("relay mode"): the
 * ghosts have no devices, and a member's client rejects an event whose sender
 * is not the owner of the device that encrypted it. `clear`: the event is
 * never encrypted (a read receipt), so the ghost may send it.
 */
export async function speaker(s: MatrixAdapterState, event: LogEvent, roomId: string, opts: { clear?: boolean } = {}): Promise<Speaker> {
  let encryptionChecked = false;
  if (s.ghosts && !opts.clear) {
    if (!s.rooms.encrypted.has(roomId) && cryptoUnavailable(s) === undefined) {
      await checkEncryptionNow(s, roomId);
      encryptionChecked = true;
    }
    if (s.rooms.encrypted.has(roomId)) {
      if (!s.rooms.joined.has(roomId)) await joinRoom(s, roomId);
      if (!s.rooms.joined.has(roomId)) throw new MatrixNotJoinedError(roomId, s.userId);
      return { userId: s.userId, relay: true, encryptionChecked };
    }
  }
  if (s.ghosts) {
    try {
      const userId = await s.ghosts.ensure(event.sender.uid, event.sender.display, roomId);
      return { userId, asUser: userId, encryptionChecked };
    } catch (err) {
      // Cannot join: the room needs an invite and our bot is not in it (yet).
      if (isMatrixApiError(err, 'M_FORBIDDEN')) throw new MatrixNotJoinedError(roomId, s.ghosts.userIdFor(event.sender.uid), { cause: err });
      throw err;
    }
  }
  if (!s.rooms.joined.has(roomId)) await joinRoom(s, roomId);
  if (!s.rooms.joined.has(roomId)) throw new MatrixNotJoinedError(roomId, s.userId);
  return { userId: s.userId };
}

export function renderOptions(s: MatrixAdapterState, event: LogEvent, who?: Speaker): RenderOptions {
  const mentions = mentionedUserIds(s, event);
  if (who?.relay === true) return { prefix: expandPrefix(RELAY_PREFIX, event.sender), emoteName: event.sender.display ?? event.sender.uid, ...(mentions.length > 0 ? { mentions } : {}) };
  const bot = s.config.bot;
  if (s.mode !== 'bot' || !bot) return mentions.length > 0 ? { mentions } : {};
  return { prefix: expandPrefix(bot.senderPrefix, event.sender), emoteName: event.sender.display ?? event.sender.uid, ...(mentions.length > 0 ? { mentions } : {}) };
}

/** `content.mentions` as Matrix user ids: Matrix users as they are, others as their ghosts (appservice mode). */
function mentionedUserIds(s: MatrixAdapterState, event: LogEvent): string[] {
  const uids = 'content' in event ? (event.content.mentions ?? []) : [];
  return uids.flatMap((uid) => {
    if (uid.startsWith('matrix:@')) return [uid.slice('matrix:'.length)];
    return s.ghosts ? [s.ghosts.userIdFor(uid)] : [];
  });
}

/**
 * PUT /send/{type}/{txnId}; a ghost that lost its membership (kicked) joins
 * again once. Into an end-to-end encrypted room the event goes as
 * m.room.encrypted (crypto/machine.ts), or not at all: when the crypto is
 * not active or encrypting fails, this throws and nothing is sent in clear.
 */
export async function send(s: MatrixAdapterState, roomId: string, type: string, txnId: string, content: JsonObject, who: Speaker): Promise<string> {
  let sendType = type;
  let body = content;
  // The room may have turned encrypted since our last /sync or transaction: with crypto configured,
  // ask before sending anything in clear, so nothing after the m.room.encryption event goes out unencrypted.
  if (!s.rooms.encrypted.has(roomId) && !who.encryptionChecked && cryptoUnavailable(s) === undefined) await checkEncryptionNow(s, roomId);
  if (s.rooms.encrypted.has(roomId)) {
    const crypto = s.crypto.machine;
    if (!crypto) throw new MatrixEncryptedRoomError(roomId, s.crypto.problem ?? 'the crypto is not ready yet');
    // A ghost has no device: its encrypted event would be rejected by members' clients. Retried, the bot relays it.
    if (who.asUser !== undefined) throw new MatrixEncryptedRoomError(roomId, 'it turned encrypted while this send was prepared for a ghost; retried through the bridge bot');
    body = await crypto.encrypt(roomId, type, content, await roomEncryptionSettings(s, roomId));
    sendType = 'm.room.encrypted';
  }
  const path = mxPath`/_matrix/client/v3/rooms/${roomId}/send/${sendType}/${txnId}`;
  const put = () => s.http.request('PUT', path, { body, ...(who.asUser !== undefined ? { asUser: who.asUser } : {}) });
  let res: JsonObject;
  try {
    res = await put();
  } catch (err) {
    if (!(isMatrixApiError(err, 'M_FORBIDDEN') && who.asUser !== undefined && s.ghosts?.forgetJoin(who.asUser, roomId))) throw err;
    await s.ghosts.ensureJoined(who.asUser, roomId);
    res = await put();
  }
  return eventIdOf(res);
}

export async function redact(s: MatrixAdapterState, roomId: string, eventId: string, txnId: string, content: JsonObject, who: Speaker): Promise<string> {
  const path = mxPath`/_matrix/client/v3/rooms/${roomId}/redact/${eventId}/${txnId}`;
  try {
    return eventIdOf(await s.http.request('PUT', path, { body: content, ...(who.asUser !== undefined ? { asUser: who.asUser } : {}) }));
  } catch (err) {
    // A ghost may not redact others' events; our bot may (when it has the power level).
    if (!(isMatrixApiError(err, 'M_FORBIDDEN') && who.asUser !== undefined)) throw err;
    return eventIdOf(await s.http.request('PUT', path, { body: content }));
  }
}

function eventIdOf(res: JsonObject): string {
  const id = res['event_id'];
  if (typeof id !== 'string' || !id.startsWith('$')) throw new MatrixApiError(200, 'M_BAD_JSON', 'answer without event_id');
  return id;
}
