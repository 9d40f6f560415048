/**
 * Restart speed after a crash (issue 12, point 8): a `syncgate serve`
 * process in application-service mode is killed with SIGKILL while the
 * homeserver has a transaction for it; the homeserver's retries fail and it
 * backs off as Synapse does. The same replica is started again: its AS
 * listener must take the pending transaction at once — not after the dead
 * process's connection lease expires (10 min here), and not when the
 * homeserver's backoff runs out (512 s here, Synapse's cap), but because
 * the new process pinged the homeserver on start, which makes a homeserver
 * that supports the ping (Synapse 1.132+) retry at once.
 *
 * How fast that is, is measured by `npm run bench` (BENCH_ONLY=restart).
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parseMatrixConfig, registrationYaml } from '../../adapters/matrix/config.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { cliRunner, type CliProcess } from '../harness/cli.js';
import { createFakeHomeserver, type AppServiceRegistration, type FakeHomeserver } from '../harness/fake-homeserver.js';
import { getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';

const run = cliRunner();
const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** long enough that a process waiting for the dead one's lease would not take any transaction within the test */
const LEASE_MS = 600_000;
const ADMIN = 'mx-restart-admin-token-0123456789';
const LISTENING = 'Matrix application-service listener started';
const PINGED = 'the homeserver reached our application-service listener (ping)';

describe('Matrix application service after kill -9', () => {
  it('the restarted replica takes the pending transaction on start: its ping brings the homeserver\'s retry, not the backoff or the old lease', async () => {
    // Down long enough for Synapse's backoff to reach its cap: the next retry on its own would be in 512 s.
    const hs: FakeHomeserver = await createFakeHomeserver({ serverName: 'fake.test', appServiceRetry: { initialMs: 512_000, maxMs: 512_000 } });
    cleanup.push(() => hs.stop());
    const alice = hs.registerUser('alice', 'pw');
    const roomId = hs.createRoom(alice.userId, { name: 'Ops' });

    const asPort = await getFreePort();
    const matrix = {
      mode: 'appservice',
      homeserverUrl: hs.url,
      serverName: 'fake.test',
      stopGraceMs: 300,
      appservice: { asToken: 'as-token-0123456789abcdef', hsToken: 'hs-token-0123456789abcdef', url: `http://127.0.0.1:${asPort}`, listenHost: '127.0.0.1', listenPort: asPort },
    };
    const reg = parse(registrationYaml(parseMatrixConfig(matrix))) as AppServiceRegistration;
    hs.registerAppService(reg);

    const prefix = testPrefix('mxrestart');
    const httpPort = await getFreePort();
    const dir = await mkdtemp(join(tmpdir(), 'sg-mx-restart-'));
    const configFile = join(dir, 'syncgate.yaml');
    await writeFile(
      configFile,
      stringify({
        partitions: 2,
        redis: { url: inject('redisUrl'), prefix },
        http: { host: '127.0.0.1', port: httpPort, adminToken: ADMIN },
        log: { level: 'info' },
        // the same pod, restarted: it may take its dead incarnation's leases
        replicaId: 'matrix-pod-0',
        delivery: { leaseMs: LEASE_MS },
        shutdownGraceMs: 1000,
        rooms: [{ id: 'ops', links: [{ endpoint: 'matrix', target: roomId }] }],
        adapters: { matrix: { type: 'matrix', ...matrix } },
      }),
    );
    const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    cleanup.push(() => log.close());
    const bodies = async () => (await log.read(undefined, { rooms: new Set(['ops']), limit: 100 })).events.flatMap((e) => ('content' in e ? [e.content.body] : []));
    const ready = async () => {
      const res = await fetch(`http://127.0.0.1:${httpPort}/v1/admin/status`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined);
      if (res?.status !== 200) return false;
      return ((await res.json()) as { adapters: Record<string, { ready: boolean }> }).adapters['matrix']?.ready === true;
    };
    const serve = async (): Promise<CliProcess> => {
      const p = run(['serve', '--config', configFile]);
      const exited = () => (p.proc.exitCode !== null || p.proc.signalCode !== null ? new Error(`syncgate exited:\n${p.out.stdout}\n${p.out.stderr}`) : undefined);
      await waitFor(ready, { timeoutMs: 60_000, what: 'the Matrix adapter ready (connected, room joined)', failFast: exited });
      return p;
    };

    const first = await serve();
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the crash' });
    await waitFor(async () => (await bodies()).includes('before the crash'), { timeoutMs: 30_000, what: 'the first message in the log' });
    // In the log is not yet acknowledged: killed before its 200, that transaction would be the one retried.
    await waitFor(() => hs.appServiceTransactions(reg.id).every((t) => t.delivered), { timeoutMs: 30_000, what: 'every transaction so far acknowledged' });

    // The crash: no lease released, no listener closed cleanly.
    first.proc.kill('SIGKILL');
    await waitForExit(first.proc);
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'while the gateway was down' });
    const pending = () => hs.appServiceTransactions(reg.id).find((t) => JSON.stringify(t.body).includes('while the gateway was down'));
    await waitFor(() => (pending()?.attempts.length ?? 0) >= 1, { timeoutMs: 30_000, what: 'the homeserver to fail pushing to the dead gateway' });
    expect(pending()?.delivered).toBe(false);

    const second = run(['serve', '--config', configFile]);
    const exited = () => (second.proc.exitCode !== null ? new Error(`syncgate exited:\n${second.out.stdout}\n${second.out.stderr}`) : undefined);
    await waitFor(() => pending()?.delivered === true, { timeoutMs: 60_000, what: 'the restarted gateway to take the pending transaction', failFast: exited });
    const txn = pending();
    // The homeserver was waiting out its backoff; what ended the wait was the new process's ping.
    expect(txn?.retriedBy.at(-1)).toBe('ping');
    expect(txn?.retriedBy.filter((c) => c === 'backoff')).toEqual([]);
    expect(hs.appServicePings(reg.id)).toBeGreaterThanOrEqual(2);
    // Nothing before the listener but the lease (reclaimed at once); the ping after it.
    const line = (msg: string) => second.out.stdout.split('\n').findIndex((l) => l.includes(`"msg":"${msg}`));
    expect(line(LISTENING)).toBeGreaterThanOrEqual(0);
    expect(line(PINGED)).toBeGreaterThan(line(LISTENING));
    await waitFor(async () => (await bodies()).includes('while the gateway was down'), { timeoutMs: 30_000, what: 'the message sent while down in the log' });
    expect((await bodies()).filter((b) => b === 'while the gateway was down')).toHaveLength(1);
  }, 240_000);
});
