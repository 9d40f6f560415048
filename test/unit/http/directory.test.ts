import { afterEach, describe, expect, it } from 'vitest';
import { isSyncgateError } from '../../../src/core/errors.js';
import type { EventLog } from '../../../src/core/ports.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { Directory } from '../../../src/http/directory.js';
import { silentLogger } from '../../../src/log/index.js';

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (err) {
    return isSyncgateError(err) ? err.code : String(err);
  }
}

const logs: EventLog[] = [];
afterEach(async () => {
  await Promise.all(logs.splice(0).map((l) => l.close()));
});

async function directory(): Promise<{ dir: Directory; log: EventLog }> {
  const log = createEventLog({ partitions: 2, log: silentLogger() });
  logs.push(log);
  await log.rooms.put({ id: 'ops', links: [] });
  await log.rooms.put({ id: 'lobby', links: [] });
  return { dir: new Directory(log), log };
}

describe('Directory', () => {
  it('authenticates its tokens and nothing else', async () => {
    const { dir } = await directory();
    await dir.createUser('alice', undefined);
    const device = await dir.createDevice('alice', 'phone');
    expect(await dir.authenticate(device.token)).toEqual({ deviceId: device.deviceId, user: 'alice' });
    const [prefix, id, ...rest] = device.token.split('_');
    const secret = rest.join('_');
    const flipped = secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A');
    expect(await code(dir.authenticate(`${prefix}_${id}_${flipped}`))).toBe('SG_ERR_AUTH_INVALID');
    expect(await code(dir.authenticate(`sgd_d${'0'.repeat(20)}_${secret}`))).toBe('SG_ERR_AUTH_INVALID');
    expect(await code(dir.authenticate(device.token.slice(0, -1)))).toBe('SG_ERR_AUTH_INVALID');
    expect(await code(dir.authenticate(''))).toBe('SG_ERR_AUTH_INVALID');
    const other = await dir.createDevice('alice', undefined);
    expect(other.token).not.toBe(device.token);
    expect(await code(dir.authenticate(`sgd_${device.deviceId}_${other.token.slice(-43)}`))).toBe('SG_ERR_AUTH_INVALID');
  });

  it('stores a hash, never the token', async () => {
    const { dir, log } = await directory();
    await dir.createUser('alice', 'Alice');
    const device = await dir.createDevice('alice', undefined);
    const entries = await log.state.entries('http:devices');
    expect(JSON.stringify(entries)).not.toContain(device.token.slice(-43));
    expect(entries.map(([, v]) => (JSON.parse(v) as { hash: string }).hash)).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)]);
    expect(JSON.stringify(await dir.listDevices())).not.toContain('hash');
  });

  it('grants rooms: 403 for an existing room not granted, 404 for an unknown one', async () => {
    const { dir, log } = await directory();
    await dir.createUser('alice', undefined);
    expect(await code(dir.grant('alice', 'ghost'))).toBe('SG_ERR_ROOM_UNKNOWN');
    expect(await code(dir.grant('nobody', 'ops'))).toBe('SG_ERR_USER_UNKNOWN');
    await dir.grant('alice', 'ops');
    expect((await dir.requireRoom('alice', 'ops')).id).toBe('ops');
    expect(await code(dir.requireRoom('alice', 'lobby'))).toBe('SG_ERR_FORBIDDEN');
    expect(await code(dir.requireRoom('alice', 'ghost'))).toBe('SG_ERR_ROOM_UNKNOWN');
    await log.rooms.delete('ops');
    expect(await code(dir.requireRoom('alice', 'ops'))).toBe('SG_ERR_ROOM_UNKNOWN');
  });

  it('deleting a user removes its devices and grants', async () => {
    const { dir } = await directory();
    await dir.createUser('alice', undefined);
    await dir.createUser('bob', undefined);
    const a = await dir.createDevice('alice', undefined);
    const b = await dir.createDevice('bob', undefined);
    await dir.grant('alice', 'ops');
    expect(await dir.deleteUser('alice')).toBe(true);
    expect(await code(dir.authenticate(a.token))).toBe('SG_ERR_AUTH_INVALID');
    expect(await dir.grants('alice')).toEqual([]);
    expect((await dir.authenticate(b.token)).user).toBe('bob');
    expect(await dir.deleteUser('alice')).toBe(false);
    expect(await code(dir.createUser('bob', undefined))).toBe('SG_ERR_CONFLICT');
  });
});
