/**
 * The `syncgate` command as an operator runs it: serve with no Redis (the
 * memory log, announced as not durable), with Redis, and a clean stop on
 * SIGTERM; bad config reported with every problem; dlq commands.
 */
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { describe, expect, inject, it } from 'vitest';
import { createDeliveryManager } from '../../src/bridge/delivery.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { cliRunner } from '../harness/cli.js';
import { TestAdapter } from '../harness/test-adapter.js';
import { testPrefix } from '../harness/redis.js';


const run = cliRunner();

describe('syncgate CLI', () => {
  it('serves with the in-memory log, says it is not durable, and stops cleanly on SIGTERM', async () => {
    const port = await getFreePort();
    const { proc, out } = run(['serve'], { SYNCGATE_HTTP_PORT: String(port), SYNCGATE_LOG_LEVEL: 'info' });
    await waitFor(() => out.stdout.includes('syncgate listening'), { timeoutMs: 30_000, what: 'the gateway to listen', failFast: () => (proc.exitCode !== null ? new Error(`exited: ${out.stderr}`) : undefined) });
    expect(out.stdout).toMatch(/NOT durable/);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    proc.kill('SIGTERM');
    await waitForExit(proc);
    expect(proc.exitCode).toBe(0);
    expect(out.stdout).toMatch(/"msg":"stopped"/);
  });

  it('serves with Redis from the environment', async () => {
    const port = await getFreePort();
    const { proc, out } = run(['serve'], { SYNCGATE_HTTP_PORT: String(port), SYNCGATE_REDIS_URL: inject('redisUrl'), SYNCGATE_REDIS_PREFIX: testPrefix('cli') });
    await waitFor(() => out.stdout.includes('syncgate listening'), { timeoutMs: 30_000, what: 'the gateway to listen', failFast: () => (proc.exitCode !== null ? new Error(`exited: ${out.stderr}`) : undefined) });
    expect(out.stdout).toMatch(/event log: Redis/);
    expect(out.stdout).not.toMatch(/NOT durable/);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(200);
    proc.kill('SIGINT');
    await waitForExit(proc);
    expect(proc.exitCode).toBe(0);
  });

  it('reports every configuration problem at once and exits 2 (a configuration error)', async () => {
    const { proc, out } = run(['serve'], { SYNCGATE_HTTP_PORT: 'not-a-port', SYNCGATE_PARTITIONS: '0', SYNCGATE_TYPO: 'x' });
    await waitForExit(proc);
    expect(proc.exitCode).toBe(2);
    expect(out.stderr).toMatch(/SG_ERR_CONFIG_INVALID/);
    expect(out.stderr).toMatch(/\/http\/port/);
    expect(out.stderr).toMatch(/\/partitions/);
    expect(out.stderr).toMatch(/SYNCGATE_TYPO/);
  });

  it('lists, replays and drops dead letters with `syncgate dlq`', async () => {
    const prefix = testPrefix('clidlq');
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    await log.rooms.put({ id: 'ops', links: [{ endpoint: 'remote', target: 't-ops' }] });
    const adapter = new TestAdapter('remote', createIngestSink({ log, logger: silentLogger() }));
    await adapter.start();
    adapter.controls.rejectRooms.add('ops');
    const manager = createDeliveryManager({ log, adapters: [adapter], links: { linksOfRoom: () => [{ endpoint: 'remote', target: 't-ops' }] }, logger: silentLogger(), options: { leaseMs: 2000 } });
    await manager.start();
    const ids = [await log.append(message('ops', 'one')), await log.append(message('ops', 'two'))].map((r) => r.eventId);
    await waitFor(async () => (await log.delivery.deadCount()) === 2, { timeoutMs: 15_000, what: 'two dead letters' });
    const env = { SYNCGATE_REDIS_URL: inject('redisUrl'), SYNCGATE_REDIS_PREFIX: prefix };

    const list = run(['dlq', 'list', '--json'], env);
    await waitForExit(list.proc);
    expect(list.proc.exitCode).toBe(0);
    const rows = JSON.parse(list.out.stdout) as Array<{ id: string; eventId: string; reason: string }>;
    expect(rows.map((r) => r.eventId).sort()).toEqual([...ids].sort());
    expect(rows[0]?.reason).toMatch(/rejected/);

    const drop = run(['dlq', 'drop', rows[0]?.id ?? ''], env);
    await waitForExit(drop.proc);
    expect(drop.out.stdout).toMatch(/1 of 1 dead letter\(s\) dropped/);

    adapter.controls.rejectRooms.clear();
    const replay = run(['dlq', 'replay', '--all'], env);
    await waitForExit(replay.proc);
    expect(replay.out.stdout).toMatch(/1 of 1 dead letter\(s\) queued/);
    await waitFor(async () => (await adapter.recorder.all()).length === 1, { timeoutMs: 15_000, what: 'the replayed delivery' });
    expect((await adapter.recorder.all())[0]?.eventId).toBe(rows[1]?.eventId);
    expect(await log.delivery.deadCount()).toBe(0);

    const memory = run(['dlq', 'list'], {});
    await waitForExit(memory.proc);
    expect(memory.proc.exitCode).toBe(2);
    expect(memory.out.stderr).toMatch(/need a Redis log/);
    await manager.stop(1000);
    await log.close();
  });

  it('writes the Matrix application-service registration from the config', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sgreg-'));
    const configFile = join(dir, 'config.yaml');
    await writeFile(
      configFile,
      'adapters:\n  matrix:\n    type: matrix\n    homeserverUrl: http://127.0.0.1:8008\n    serverName: example.org\n    appservice:\n      asToken: as-token-0123456789abcdef\n      hsToken: hs-token-0123456789abcdef\n      url: http://127.0.0.1:9000\n',
    );
    const out = join(dir, 'registration.yaml');
    const { proc } = run(['matrix-registration', '--config', configFile, '--out', out], {});
    await waitForExit(proc);
    expect(proc.exitCode).toBe(0);
    const reg = parseYaml(await readFile(out, 'utf8')) as { as_token: string; hs_token: string; url: string; namespaces: { users: Array<{ exclusive: boolean; regex: string }> } };
    expect(reg.as_token).toBe('as-token-0123456789abcdef');
    expect(reg.hs_token).toBe('hs-token-0123456789abcdef');
    expect(reg.url).toBe('http://127.0.0.1:9000');
    expect(reg.namespaces.users.every((u) => u.exclusive)).toBe(true);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const missing = run(['matrix-registration'], {});
    await waitForExit(missing.proc);
    expect(missing.proc.exitCode).toBe(2);
    expect(missing.out.stderr).toMatch(/no Matrix adapter named matrix/);
  });

  it('prints the Prosody settings the XMPP bridge account needs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sgprosody-'));
    const configFile = join(dir, 'config.yaml');
    await writeFile(
      configFile,
      'rooms:\n  - id: ops\n    links:\n      - endpoint: xmpp\n        target: ops@rooms.example.org\nadapters:\n  xmpp:\n    type: xmpp\n    service: xmpp://127.0.0.1:5222\n    jid: bridge@example.org\n    password: secret\n',
    );
    const { proc, out } = run(['prosody-config', '--config', configFile], {});
    await waitForExit(proc);
    expect(proc.exitCode).toBe(0);
    for (const module of ['mam', 'carbons', 'smacks', 'muc_mam']) expect(out.stdout).toContain(`"${module}"`);
    expect(out.stdout).toContain('rooms.example.org');
    expect(out.stdout).not.toContain('secret');

    const ej = run(['prosody-config', '--server', 'ejabberd', '--config', configFile], {});
    await waitForExit(ej.proc);
    expect(ej.proc.exitCode).toBe(0);
    for (const module of ['mod_mam', 'mod_carboncopy', 'mod_stream_mgmt', 'mod_muc']) expect(ej.out.stdout).toContain(`${module}:`);
    expect(ej.out.stdout).toContain('host: "rooms.example.org"');
    expect(ej.out.stdout).not.toContain('secret');
  });

  it('rejects unknown commands with the usage text', async () => {
    const { proc, out } = run(['frobnicate'], {});
    await waitForExit(proc);
    expect(proc.exitCode).toBe(2);
    expect(out.stderr).toMatch(/SG_ERR_CLI_USAGE/);
    expect(out.stderr).toMatch(/Usage:/);
  });
});
