/**
 * Users, devices and room grants, kept in the log's shared state so every
 * replica sees a change at once. A device token is `sgd_<deviceId>_<secret>`;
 * only sha256(secret) is stored (the secret is 256 random bits, so a plain
 * hash is enough) and it is compared in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { SyncgateError } from '../core/errors.js';
import type { EventLog, RoomSpec, StateStore } from '../core/ports.js';

export const NS = {
  users: 'http:users',
  devices: 'http:devices',
  grants: (user: string) => `http:grants:${user}`,
  markers: 'http:markers',
} as const;

export interface UserRecord {
  readonly id: string;
  readonly display?: string;
  readonly created: number;
}

export interface DeviceRecord {
  readonly deviceId: string;
  readonly user: string;
  readonly name?: string;
  readonly created: number;
}

interface StoredDevice extends DeviceRecord {
  /** hex sha256 of the token secret */
  readonly hash: string;
}

/** Who a device token belongs to. */
export interface DeviceIdentity {
  readonly deviceId: string;
  readonly user: string;
}

const TOKEN = /^sgd_(d[0-9a-f]{20})_([A-Za-z0-9_-]{43})$/;
// Compared against when the device is unknown, so a miss costs what a hit costs.
const DUMMY_HASH = createHash('sha256').update('syncgate-no-such-device').digest();

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function parseJson<T extends object>(text: string | undefined, required: readonly string[]): T | undefined {
  if (text === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return undefined;
    return required.every((k) => k in value) ? (value as T) : undefined;
  } catch {
    return undefined;
  }
}

function publicDevice(d: StoredDevice): DeviceRecord {
  return { deviceId: d.deviceId, user: d.user, created: d.created, ...(d.name !== undefined ? { name: d.name } : {}) };
}

export class Directory {
  private readonly state: StateStore;
  private readonly log: EventLog;

  constructor(log: EventLog) {
    this.log = log;
    this.state = log.state;
  }

  async createUser(id: string, display: string | undefined): Promise<UserRecord> {
    const user: UserRecord = { id, created: Date.now(), ...(display !== undefined ? { display } : {}) };
    if (!(await this.state.setIfAbsent(NS.users, id, JSON.stringify(user)))) throw new SyncgateError('SG_ERR_CONFLICT', `user ${id} exists`);
    return user;
  }

  async getUser(id: string): Promise<UserRecord | undefined> {
    return parseJson<UserRecord>(await this.state.get(NS.users, id), ['id', 'created']);
  }

  async requireUser(id: string): Promise<UserRecord> {
    const user = await this.getUser(id);
    if (!user) throw new SyncgateError('SG_ERR_USER_UNKNOWN', id);
    return user;
  }

  async listUsers(): Promise<UserRecord[]> {
    const rows = await this.state.entries(NS.users);
    return rows
      .map(([, v]) => parseJson<UserRecord>(v, ['id', 'created']))
      .filter((u): u is UserRecord => u !== undefined)
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Removes the user, its devices (their tokens stop working) and its grants. */
  async deleteUser(id: string): Promise<boolean> {
    const devices = await this.listDevices(id);
    await Promise.all(devices.map((d) => this.state.delete(NS.devices, d.deviceId)));
    const grants = await this.grants(id);
    await Promise.all(grants.map((room) => this.state.delete(NS.grants(id), room)));
    return this.state.delete(NS.users, id);
  }

  async createDevice(user: string, name: string | undefined): Promise<DeviceRecord & { token: string }> {
    await this.requireUser(user);
    const deviceId = `d${randomBytes(10).toString('hex')}`;
    const secret = randomBytes(32).toString('base64url');
    const stored: StoredDevice = { deviceId, user, created: Date.now(), hash: sha256(secret).toString('hex'), ...(name !== undefined ? { name } : {}) };
    if (!(await this.state.setIfAbsent(NS.devices, deviceId, JSON.stringify(stored)))) throw new SyncgateError('SG_ERR_CONFLICT', 'device id collision; retry');
    return { ...publicDevice(stored), token: `sgd_${deviceId}_${secret}` };
  }

  async listDevices(user?: string): Promise<DeviceRecord[]> {
    const rows = await this.state.entries(NS.devices);
    return rows
      .map(([, v]) => parseJson<StoredDevice>(v, ['deviceId', 'user', 'hash']))
      .filter((d): d is StoredDevice => d !== undefined && (user === undefined || d.user === user))
      .map(publicDevice)
      .sort((a, b) => a.created - b.created || (a.deviceId < b.deviceId ? -1 : 1));
  }

  async deviceExists(deviceId: string): Promise<boolean> {
    return (await this.state.get(NS.devices, deviceId)) !== undefined;
  }

  deleteDevice(deviceId: string): Promise<boolean> {
    return this.state.delete(NS.devices, deviceId);
  }

  /** The device a bearer token belongs to; SG_ERR_AUTH_INVALID for anything else. */
  async authenticate(token: string): Promise<DeviceIdentity> {
    const m = TOKEN.exec(token);
    if (!m?.[1] || !m[2]) throw new SyncgateError('SG_ERR_AUTH_INVALID');
    const device = parseJson<StoredDevice>(await this.state.get(NS.devices, m[1]), ['deviceId', 'user', 'hash']);
    const expected = device && /^[0-9a-f]{64}$/.test(device.hash) ? Buffer.from(device.hash, 'hex') : DUMMY_HASH;
    const ok = timingSafeEqual(expected, sha256(m[2]));
    if (!ok || !device) throw new SyncgateError('SG_ERR_AUTH_INVALID');
    return { deviceId: device.deviceId, user: device.user };
  }

  async grant(user: string, room: string): Promise<void> {
    await this.requireUser(user);
    if (!(await this.log.rooms.get(room))) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
    await this.state.set(NS.grants(user), room, String(Date.now()));
  }

  revoke(user: string, room: string): Promise<boolean> {
    return this.state.delete(NS.grants(user), room);
  }

  async grants(user: string): Promise<string[]> {
    return (await this.state.entries(NS.grants(user))).map(([room]) => room).sort();
  }

  /**
   * The room, when the user may use it. Not granted: 403 when the room exists,
   * 404 when it does not; granted but deleted since: 404.
   */
  async requireRoom(user: string, room: string): Promise<RoomSpec> {
    const [granted, spec] = await Promise.all([this.state.get(NS.grants(user), room), this.log.rooms.get(room)]);
    if (!spec) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
    if (granted === undefined) throw new SyncgateError('SG_ERR_FORBIDDEN', `no access to room ${room}`);
    return spec;
  }
}
