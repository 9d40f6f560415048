/**
 * The linked Matrix rooms as our bot sees them: joined (or why not, for the
 * status), and whether one is end-to-end encrypted — then it is bridged only
 * through the adapter's crypto (crypto/), never in clear; without the crypto
 * nothing is bridged to or from it and the admin API refuses to link it
 * (checkLink). With `encryption.mode: required` it is the other way round
 * for rooms in clear: refused (SG_ERR_ROOM_NOT_ENCRYPTED), nothing bridged
 * to or from them until their m.room.encryption state appears.
 */
import type { LinkRefusal } from '../../src/core/adapter.js';
import type { RoomLink } from '../../src/core/ports.js';
import { mxPath, sleep } from './client.js';
import { isMatrixApiError, MatrixApiError } from './errors.js';
import { cryptoUnavailable } from './crypto/session.js';
import type { RoomEncryptionSettings } from './crypto/machine.js';
import type { MatrixAdapterState } from './state.js';

/** Joins the linked rooms not joined yet; forgets rooms no longer linked. */
export async function joinLinked(s: MatrixAdapterState): Promise<void> {
  const linked = new Set(s.deps.links.linksOf(s.name).map((l) => l.link.target));
  for (const roomId of linked) if (!s.rooms.joined.has(roomId)) await joinRoom(s, roomId);
  for (const roomId of [...s.rooms.joined]) if (!linked.has(roomId)) s.rooms.joined.delete(roomId);
}

/** The bot joins a linked room (errors are logged and shown in status, not thrown). */
export async function joinRoom(s: MatrixAdapterState, roomId: string): Promise<void> {
  if (!roomId.startsWith('!')) {
    s.rooms.joinProblems.set(roomId, 'link targets must be room ids (!room:server), not aliases');
    s.log.error({ roomId }, 'Matrix link target is not a room id');
    return;
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await s.http.request('POST', mxPath`/_matrix/client/v3/join/${roomId}`, { body: {} });
        break;
      } catch (err) {
        if (!(err instanceof MatrixApiError) || !err.rateLimited || attempt >= 5 || s.session.stopping) throw err;
        await sleep(err.retryAfterMs ?? 1000);
      }
    }
    s.rooms.joined.add(roomId);
    s.rooms.joinProblems.delete(roomId);
    await checkEncryption(s, roomId);
    if (refusesClearRoom(s, roomId)) s.log.error({ roomId, code: 'SG_ERR_ROOM_NOT_ENCRYPTED' }, clearRoomRefusal(roomId));
    s.log.info({ roomId }, 'joined linked Matrix room');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    s.rooms.joinProblems.set(roomId, reason);
    s.log.warn({ roomId, reason }, 'could not join linked Matrix room (invite the bot, or check the room id)');
  }
}

async function checkEncryption(s: MatrixAdapterState, roomId: string): Promise<void> {
  try {
    await s.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.encryption/`);
    markEncrypted(s, roomId);
  } catch (err) {
    if (!isMatrixApiError(err, 'M_NOT_FOUND')) s.log.debug({ err, roomId }, 'could not read the room encryption state');
  }
}

/** The room's Megolm rotation settings (m.room.encryption `rotation_period_ms` / `rotation_period_msgs`), read once per change. */
export async function roomEncryptionSettings(s: MatrixAdapterState, roomId: string): Promise<RoomEncryptionSettings> {
  const known = s.crypto.roomSettings.get(roomId);
  if (known) return known;
  const content = await s.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.encryption/`);
  const ms = content['rotation_period_ms'];
  const msgs = content['rotation_period_msgs'];
  const settings: RoomEncryptionSettings = {
    ...(typeof ms === 'number' && Number.isSafeInteger(ms) && ms > 0 ? { rotationPeriodMs: ms } : {}),
    ...(typeof msgs === 'number' && Number.isSafeInteger(msgs) && msgs > 0 ? { rotationPeriodMsgs: msgs } : {}),
  };
  s.crypto.roomSettings.set(roomId, settings);
  return settings;
}

/** Reads the room's m.room.encryption state now (not found: in clear); any other failure throws, so nothing is sent blind. */
export async function checkEncryptionNow(s: MatrixAdapterState, roomId: string): Promise<void> {
  try {
    await s.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.encryption/`);
  } catch (err) {
    if (isMatrixApiError(err, 'M_NOT_FOUND')) return;
    throw err;
  }
  markEncrypted(s, roomId);
}

/** `encryption.mode: required`: only end-to-end encrypted rooms are bridged. */
export function requiresEncryption(s: MatrixAdapterState): boolean {
  return s.config.encryption?.mode === 'required';
}

/**
 * `encryption.mode: required` and the room is not known to be encrypted: nothing
 * is bridged to or from it (SG_ERR_ROOM_NOT_ENCRYPTED in the status). A room
 * turns known-encrypted by its m.room.encryption state (read at join, seen in
 * /sync or a transaction, asked before a send).
 */
export function refusesClearRoom(s: MatrixAdapterState, roomId: string): boolean {
  return requiresEncryption(s) && !s.rooms.encrypted.has(roomId);
}

/** Why a linked room in clear is refused (the status and delivery rejections say it). */
export function clearRoomRefusal(roomId: string): string {
  return `SG_ERR_ROOM_NOT_ENCRYPTED: Matrix room ${roomId} is not end-to-end encrypted and encryption.mode is required: nothing is bridged to or from it until it turns encrypted (or unlink it)`;
}

/** The admin API asks before it links a room: an encrypted Matrix room cannot be bridged unless our crypto is configured; with `encryption.mode: required` one in clear cannot either. */
export async function checkLink(s: MatrixAdapterState, link: RoomLink): Promise<LinkRefusal | undefined> {
  if (requiresEncryption(s)) return checkLinkRequired(s, link);
  const problem = cryptoUnavailable(s);
  if (problem === undefined) return undefined;
  const refusal: LinkRefusal = { reason: 'encrypted', detail: `Matrix room ${link.target} is end-to-end encrypted and this adapter cannot bridge it: ${problem}` };
  if (s.rooms.encrypted.has(link.target)) return refusal;
  try {
    // Readable when our user is in the room, or the room's history is public; otherwise we cannot tell yet.
    await s.http.request('GET', mxPath`/_matrix/client/v3/rooms/${link.target}/state/m.room.encryption/`, { timeoutMs: 5_000 });
    markEncrypted(s, link.target);
    return refusal;
  } catch {
    return undefined;
  }
}

/** `encryption.mode: required`: a room we can read and that has no m.room.encryption state is refused; one we cannot read yet is not (it is refused at join if in clear). */
async function checkLinkRequired(s: MatrixAdapterState, link: RoomLink): Promise<LinkRefusal | undefined> {
  if (s.rooms.encrypted.has(link.target)) return undefined;
  try {
    await s.http.request('GET', mxPath`/_matrix/client/v3/rooms/${link.target}/state/m.room.encryption/`, { timeoutMs: 5_000 });
    markEncrypted(s, link.target);
    return undefined;
  } catch (err) {
    // M_NOT_FOUND only when the state is readable to us and has no m.room.encryption.
    if (isMatrixApiError(err, 'M_NOT_FOUND')) return { reason: 'unencrypted', detail: `Matrix room ${link.target} is not end-to-end encrypted and this adapter's encryption.mode is required` };
    return undefined;
  }
}

export function markEncrypted(s: MatrixAdapterState, roomId: string): void {
  // Its m.room.encryption state was (re)sent: read the rotation settings again before the next send.
  s.crypto.roomSettings.delete(roomId);
  if (s.rooms.encrypted.has(roomId)) return;
  s.rooms.encrypted.add(roomId);
  const problem = cryptoUnavailable(s);
  if (problem === undefined) {
    s.log.info({ roomId }, 'Matrix room is end-to-end encrypted: bridged with our device, nothing is sent to it in clear');
    return;
  }
  s.log.warn({ roomId, reason: problem }, 'Matrix room is end-to-end encrypted: not bridged; its encrypted events are dropped and nothing is sent to it');
}

/** Our bot or one of our ghosts. */
export function isOurs(s: MatrixAdapterState, userId: string): boolean {
  return userId === s.userId || (s.ghostRegex?.test(userId) ?? false);
}
