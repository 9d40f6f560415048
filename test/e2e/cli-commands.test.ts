/**
 * The `syncgate` command line as a new user meets it: per-command help,
 * unknown options, configuration problems and exit codes (0 success, 1
 * runtime failure, 2 usage or configuration error), check-config, the admin
 * commands, send and tail against a real gateway, and the dlq edges.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { cliRunner } from '../harness/cli.js';
import { GATEWAY_ADMIN_TOKEN, startGateway, type TestGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';


const start = cliRunner();

async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { proc, out } = start(args, env);
  await waitForExit(proc);
  return { code: proc.exitCode, ...out };
}

const COMMANDS = ['serve', 'check-config', 'dlq', 'matrix-registration', 'prosody-config', 'status', 'user', 'device', 'room', 'grant', 'revoke', 'send', 'tail'];

describe('syncgate help, options and exit codes', () => {
  it('`syncgate <command> --help` prints that command\'s usage with --config and exits 0, for every command', async () => {
    // a port nobody listens on: a command that ran instead of printing help would fail or serve
    const env = { SYNCGATE_HTTP_PORT: String(await getFreePort()), SYNCGATE_HTTP_HOST: '127.0.0.1' };
    const results = await Promise.all(COMMANDS.map(async (c) => ({ c, r: await run([c, '--help'], env) })));
    for (const { c, r } of results) {
      expect({ c, code: r.code }).toEqual({ c, code: 0 });
      expect(r.stdout).toContain(`Usage: syncgate ${c}`);
      expect(r.stdout).toContain('--config FILE');
    }
    const top = await run(['help']);
    expect(top.code).toBe(0);
    for (const c of COMMANDS) expect(top.stdout).toContain(`  ${c} `);
    expect(top.stdout).toMatch(/Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error/);
    // One tsx process per command, all at once: on a busy two-core machine that takes a while.
  }, 180_000);

  it('an unknown option is "unknown option --x" with exit 2, and nothing starts', async () => {
    const port = await getFreePort();
    const r = await run(['serve', '--bogus'], { SYNCGATE_HTTP_PORT: String(port), SYNCGATE_HTTP_HOST: '127.0.0.1' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option --bogus/);
    expect(r.stderr).toContain('Usage: syncgate serve');
    expect(r.stdout).not.toMatch(/listening/);
    const missing = await run(['serve', '--config']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--config needs a value/);
  });

  it('check-config: a valid file passes (exit 0) without starting; a bad setting or link is a configuration error (exit 2)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sg-checkcfg-'));
    const good = join(dir, 'good.yaml');
    await writeFile(good, 'rooms:\n  - id: ops\n    links:\n      - { endpoint: api, target: ops }\n');
    const ok = await run(['check-config', '--config', good]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/configuration OK/);
    expect(ok.stdout).toMatch(/rooms: ops/);

    const badLink = join(dir, 'bad-link.yaml');
    await writeFile(badLink, 'rooms:\n  - id: ops\n    links:\n      - { endpoint: xmpp, target: ops@conference.example.org }\n');
    const link = await run(['check-config', '--config', badLink]);
    expect(link.code).toBe(2);
    expect(link.stderr).toMatch(/SG_ERR_CONFIG_INVALID: .*\/rooms\/0\/links\/0\/endpoint: no adapter named xmpp/s);

    const env = await run(['check-config'], { SYNCGATE_HTTP_PORT: 'not-a-port' });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/SG_ERR_CONFIG_INVALID/);
    expect(env.stderr).toMatch(/\/http\/port/);
    expect(env.stderr).not.toMatch(/Unknown command or option/);

    const file = await run(['check-config', '--config', join(dir, 'absent.yaml')]);
    expect(file.code).toBe(2);
    expect(file.stderr).toMatch(/SG_ERR_CONFIG_FILE/);
  });
});

describe('syncgate admin commands, send and tail against a running gateway', () => {
  let gw: TestGateway;
  let env: Record<string, string>;
  beforeAll(async () => {
    gw = await startGateway({ redisUrl: inject('redisUrl'), prefix: testPrefix('cliadmin') });
    env = { SYNCGATE_URL: gw.url, SYNCGATE_ADMIN_TOKEN: GATEWAY_ADMIN_TOKEN };
  }, 60_000);
  afterAll(async () => gw?.stop());

  it('creates a user, a room, a grant and a device; sends and tails as that device; revokes', async () => {
    expect((await run(['user', 'add', 'carol', '--display', 'Carol'], env)).code).toBe(0);
    const dup = await run(['user', 'add', 'carol'], env);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/409 SG_ERR_CONFLICT/);
    const room = await run(['room', 'put', 'lobby', '--name', 'Lobby', '--link', 'api=lobby'], env);
    expect(room.code).toBe(0);
    expect((await gw.admin<{ name: string }>('GET', '/v1/admin/rooms/lobby')).body.name).toBe('Lobby');
    expect((await run(['grant', 'carol', 'lobby'], env)).code).toBe(0);
    const device = await run(['device', 'add', 'carol', '--name', 'laptop', '--json'], env);
    expect(device.code).toBe(0);
    const { token, deviceId } = JSON.parse(device.stdout) as { token: string; deviceId: string };
    const shown = await run(['user', 'show', 'carol', '--json'], env);
    expect(JSON.parse(shown.stdout)).toMatchObject({ user: { id: 'carol' }, rooms: ['lobby'], devices: [{ deviceId }] });
    expect((await run(['device', 'list', '--user', 'carol'], env)).stdout).toContain(deviceId);
    expect((await run(['room', 'list'], env)).stdout).toMatch(/lobby \(Lobby\)\n {2}api lobby/);

    // tail follows the room: started before the send, it prints the message when it arrives
    const follower = start(['tail', 'lobby', '--json', '--token', token], env);
    const sent = await run(['send', 'lobby', 'hello from the cli', '--token', token], env);
    expect(sent.code).toBe(0);
    const eventId = sent.stdout.trim();
    await waitFor(() => follower.out.stdout.includes(eventId), { timeoutMs: 60_000, what: 'tail to print the sent event', failFast: () => (follower.proc.exitCode !== null ? new Error(`tail exited: ${follower.out.stderr}`) : undefined) });
    const line = JSON.parse(follower.out.stdout.split('\n').find((l) => l.includes(eventId)) ?? '{}') as { content?: { body?: string }; sender?: { uid?: string } };
    expect(line.content?.body).toBe('hello from the cli');
    expect(line.sender?.uid).toBe('carol');
    follower.proc.kill('SIGINT');
    await waitForExit(follower.proc);
    expect(follower.proc.exitCode).toBe(0);

    // human form, from the start of the log, without following
    const human = await run(['tail', 'lobby', '--once', '--token', token], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/Z Carol: hello from the cli/);

    expect((await run(['revoke', 'carol', 'lobby'], env)).code).toBe(0);
    const refused = await run(['send', 'lobby', 'no longer', '--token', token], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/403 SG_ERR_FORBIDDEN/);
    expect((await run(['device', 'rm', deviceId], env)).code).toBe(0);
    expect((await run(['user', 'rm', 'carol'], env)).code).toBe(0);
    expect((await run(['room', 'rm', 'lobby'], env)).code).toBe(0);
    // About twenty tsx processes one after another: under full CPU load (stress-ng) they passed 180 s.
  }, 600_000);

  it('a missing device token is a usage error (2); an unreachable gateway a runtime failure (1)', async () => {
    const noToken = await run(['send', 'lobby', 'x'], env);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/--token or SYNCGATE_TOKEN/);
    const closed = await getFreePort();
    const away = await run(['user', 'list', '--url', `http://127.0.0.1:${closed}`], env);
    expect(away.code).toBe(1);
    expect(away.stderr).toMatch(/SG_ERR_GATEWAY_UNREACHABLE: .*127\.0\.0\.1:\d+/);
  }, 60_000);
});

describe('syncgate dlq edges', () => {
  it('replay --all on an empty queue is "nothing to replay" (0); an unknown id exits 1; an unknown --group is an error (2)', async () => {
    const env = { SYNCGATE_REDIS_URL: inject('redisUrl'), SYNCGATE_REDIS_PREFIX: testPrefix('clidlqedge') };
    const [empty, unknownId, unknownGroup] = await Promise.all([run(['dlq', 'replay', '--all'], env), run(['dlq', 'replay', '1-0'], env), run(['dlq', 'list', '--group', 'out:nowhere'], env)]);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toMatch(/nothing to replay/);
    expect(unknownId.code).toBe(1);
    expect(unknownId.stderr).toMatch(/SG_ERR_NOT_FOUND: .*1-0/);
    expect(unknownGroup.code).toBe(2);
    expect(unknownGroup.stderr).toMatch(/unknown --group out:nowhere/);
  }, 60_000);
});
