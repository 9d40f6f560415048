/**
 * Ghost users (application-service mode): every remote sender appears in
 * Matrix as `@<prefix><escaped uid>:<server>`, a user in our exclusive
 * namespace, registered on first use, named after `sender.display`, and
 * joined to a room before it speaks there.
 *
 * The escaping is the spec's reversible "mapping from other character sets"
 * (appendix, user identifiers): upper case `A` → `_a`, `_` → `__`, anything
 * outside `a-z 0-9 . - /` → `=xx` per UTF-8 byte.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { mxPath, type MatrixHttp } from './client.js';
import { isMatrixApiError } from './errors.js';

const MAX_USER_ID_BYTES = 255;

export function escapeLocalpart(uid: string): string {
  let out = '';
  for (const byte of Buffer.from(uid, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[a-z0-9.\-/]/.test(c)) out += c;
    else if (c === '_') out += '__';
    else if (/[A-Z]/.test(c)) out += `_${c.toLowerCase()}`;
    else out += `=${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** The ghost's user id; ids too long for Matrix are cut and made unique with a hash of the uid. */
export function ghostUserId(prefix: string, uid: string, serverName: string): string {
  const escaped = escapeLocalpart(uid);
  const full = `@${prefix}${escaped}:${serverName}`;
  if (Buffer.byteLength(full) <= MAX_USER_ID_BYTES) return full;
  const hash = createHash('sha256').update(uid).digest('hex').slice(0, 16);
  const room = MAX_USER_ID_BYTES - Buffer.byteLength(`@${prefix}-${hash}:${serverName}`);
  return `@${prefix}${escaped.slice(0, Math.max(0, room))}-${hash}:${serverName}`;
}

export function localpartOf(userId: string): string {
  return userId.slice(1, userId.indexOf(':'));
}

export interface GhostDeps {
  readonly http: MatrixHttp;
  readonly prefix: string;
  readonly serverName: string;
  readonly log: Logger;
}

/** Registration, display name and room membership of ghosts, cached (a kick is noticed on the next send). */
export class Ghosts {
  private readonly registered = new Set<string>();
  private readonly displays = new Map<string, string>();
  private readonly joined = new Set<string>();

  constructor(private readonly deps: GhostDeps) {}

  userIdFor(uid: string): string {
    return ghostUserId(this.deps.prefix, uid, this.deps.serverName);
  }

  /** Registers (M_USER_IN_USE means it exists), names and joins the ghost; returns its user id. */
  async ensure(uid: string, display: string | undefined, roomId: string): Promise<string> {
    const userId = this.userIdFor(uid);
    await this.ensureRegistered(userId);
    const name = display ?? uid;
    if (this.displays.get(userId) !== name) {
      await this.deps.http.request('PUT', mxPath`/_matrix/client/v3/profile/${userId}/displayname`, { asUser: userId, body: { displayname: name } });
      this.bounded(this.displays).set(userId, name);
    }
    await this.ensureJoined(userId, roomId);
    return userId;
  }

  async ensureRegistered(userId: string): Promise<void> {
    if (this.registered.has(userId)) return;
    try {
      await this.deps.http.request('POST', '/_matrix/client/v3/register', {
        body: { type: 'm.login.application_service', username: localpartOf(userId), inhibit_login: true },
      });
      this.deps.log.debug({ userId }, 'ghost user registered');
    } catch (err) {
      if (!isMatrixApiError(err, 'M_USER_IN_USE')) throw err;
    }
    this.bounded(this.registered).add(userId);
  }

  /** Joins as `userId`; a room that needs an invite gets one from the bot (our sender_localpart) first. */
  async ensureJoined(userId: string, roomId: string): Promise<void> {
    const key = `${userId}\u0000${roomId}`;
    if (this.joined.has(key)) return;
    const join = () => this.deps.http.request('POST', mxPath`/_matrix/client/v3/join/${roomId}`, { asUser: userId, body: {} });
    try {
      await join();
    } catch (err) {
      if (!isMatrixApiError(err) || err.status !== 403) throw err;
      await this.deps.http.request('POST', mxPath`/_matrix/client/v3/rooms/${roomId}/invite`, { body: { user_id: userId } });
      await join();
    }
    this.bounded(this.joined).add(key);
  }

  /** After a 403 on send: the ghost was kicked or left; the next ensure() joins again. */
  forgetJoin(userId: string, roomId: string): boolean {
    return this.joined.delete(`${userId}\u0000${roomId}`);
  }

  private bounded<T extends { size: number; clear(): void }>(c: T): T {
    if (c.size > 100_000) c.clear();
    return c;
  }
}
