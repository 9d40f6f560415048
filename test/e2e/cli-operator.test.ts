/**
 * What an operator meets first when running `syncgate serve` (in Kubernetes
 * or by hand): the variables Kubernetes injects, and the messages for a
 * taken port or an unreachable Redis — one coded line naming the setting.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LOOPBACK, getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { cliRunner } from '../harness/cli.js';
import { K8S_SYNCGATE_SERVICE_LINKS } from '../fixtures/k8s.js';

const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
});

const run = cliRunner();

const exited = (proc: ChildProcess, out: { stderr: string }) => () => (proc.exitCode !== null ? new Error(`exited ${proc.exitCode}: ${out.stderr}`) : undefined);


describe('syncgate serve, as an operator meets it', () => {
  it('starts next to the service-link variables Kubernetes injects, logging them at debug', async () => {
    const port = await getFreePort();
    const { proc, out } = run(['serve'], { ...K8S_SYNCGATE_SERVICE_LINKS, SYNCGATE_HTTP_PORT: String(port), SYNCGATE_LOG_LEVEL: 'debug' });
    await waitFor(() => out.stdout.includes('syncgate listening'), { timeoutMs: 60_000, what: 'the gateway to listen', failFast: exited(proc, out) });
    expect((await fetch(`http://${LOOPBACK}:${port}/healthz`)).status).toBe(200);
    expect(out.stdout).toMatch(/ignoring Kubernetes service-link variables/);
    expect(out.stdout).toContain('SYNCGATE_PORT_8080_TCP_ADDR');
  });

  it('a taken port: exits non-zero with one coded line naming http.port / SYNCGATE_HTTP_PORT, no stack trace', async () => {
    const port = await getFreePort();
    const holder = createServer();
    servers.push(holder);
    await new Promise<void>((resolve) => holder.listen(port, LOOPBACK, resolve));
    const { proc, out } = run(['serve'], { SYNCGATE_HTTP_HOST: LOOPBACK, SYNCGATE_HTTP_PORT: String(port) });
    await waitForExit(proc);
    expect(proc.exitCode).toBe(1);
    const lines = out.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^syncgate: SG_ERR_HTTP_LISTEN: .*127\.0\.0\.1:\d+.*in use.*http\.port \/ SYNCGATE_HTTP_PORT/);
    expect(`${out.stdout}${out.stderr}`).not.toMatch(/^\s+at |\\n\s+at /m);
  });

  it('an unreachable Redis: the error names redis.url and the connection failure, not client options', async () => {
    const closed = await getFreePort();
    const { proc, out } = run(['serve'], { SYNCGATE_HTTP_PORT: String(await getFreePort()), SYNCGATE_REDIS_URL: `redis://:hunter2-secret@${LOOPBACK}:${closed}` });
    await waitForExit(proc);
    expect(proc.exitCode).toBe(1);
    const lines = out.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/SG_ERR_LOG_UNAVAILABLE: .*redis\.url.*ECONNREFUSED/);
    expect(lines[0]).not.toMatch(/maxRetriesPerRequest/);
    expect(`${out.stdout}${out.stderr}`).not.toContain('hunter2-secret');
  });

  it('serves the API, ready, while the XMPP and Matrix servers are unreachable; the status says why', async () => {
    const [port, xmppPort, hsPort, asPort] = await Promise.all([getFreePort(), getFreePort(), getFreePort(), getFreePort()]);
    const dir = await mkdtemp(join(tmpdir(), 'sg-unreachable-'));
    const configFile = join(dir, 'config.yaml');
    await writeFile(
      configFile,
      [
        'adapters:',
        '  xmpp:',
        '    type: xmpp',
        `    service: xmpp://${LOOPBACK}:${xmppPort}`,
        '    jid: bridge@localhost',
        '    password: not-used-here',
        '  matrix:',
        '    type: matrix',
        `    homeserverUrl: http://${LOOPBACK}:${hsPort}`,
        '    serverName: localhost',
        '    appservice:',
        '      asToken: as-token-0123456789abcdef',
        '      hsToken: hs-token-0123456789abcdef',
        `      listenHost: ${LOOPBACK}`,
        `      listenPort: ${asPort}`,
        `      url: http://${LOOPBACK}:${asPort}`,
        'rooms:',
        '  - id: ops',
        '    links:',
        '      - { endpoint: xmpp, target: ops@conference.localhost }',
        '      - { endpoint: matrix, target: "!ops:localhost" }',
        '',
      ].join('\n'),
    );
    const admin = 'operator-admin-token-0123456789';
    const { proc, out } = run(['serve', '--config', configFile], { SYNCGATE_HTTP_HOST: LOOPBACK, SYNCGATE_HTTP_PORT: String(port), SYNCGATE_ADMIN_TOKEN: admin });
    const base = `http://${LOOPBACK}:${port}`;
    // The API answers and is ready although neither server can be reached.
    await waitFor(async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200, { timeoutMs: 60_000, what: '/readyz 200', failFast: exited(proc, out) });
    type Report = { state: string; connected: boolean; ready: boolean; lastError?: { message: string; at: string }; links: Array<{ room: string; target: string }> };
    const status = async () => {
      const res = await fetch(`${base}/v1/admin/status`, { headers: { authorization: `Bearer ${admin}` } });
      expect(res.status).toBe(200);
      return ((await res.json()) as { adapters: Record<string, Report> }).adapters;
    };
    // a device can use the API meanwhile: what it sends is kept in the log for the adapters
    const created = await fetch(`${base}/v1/admin/users`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ id: 'alice' }) });
    expect(created.status).toBe(201);
    // the status names why each adapter is not connected, with a time
    await waitFor(
      async () => {
        const a = await status();
        return a['xmpp']?.lastError !== undefined && a['matrix']?.lastError !== undefined;
      },
      { timeoutMs: 60_000, what: 'both adapters to report their last error', failFast: exited(proc, out) },
    );
    const adapters = await status();
    for (const name of ['xmpp', 'matrix']) {
      const a = adapters[name];
      expect(a?.connected).toBe(false);
      expect(a?.ready).toBe(false);
      expect(a?.lastError?.message).toMatch(/ECONNREFUSED|connect|refused|unreachable|fetch failed/i);
      expect(Number.isNaN(Date.parse(a?.lastError?.at ?? ''))).toBe(false);
      expect(a?.links).toEqual([{ room: 'ops', target: name === 'xmpp' ? 'ops@conference.localhost' : '!ops:localhost' }]);
    }
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/syncgate_adapter_ready\{adapter="xmpp"\} 0/);
    expect(metrics).toMatch(/syncgate_adapter_last_error_timestamp_seconds\{adapter="matrix"\} \d/);
  }, 180_000);
});
