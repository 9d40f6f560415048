/**
 * The console's views from a shell (issue 25): `syncgate timeline`, `trace`,
 * `lag` and `rule-test` against a running gateway with an MQTT link (real
 * Redis and Mosquitto), through the same admin API the console reads.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { waitFor, waitForExit } from '../harness/free-port.js';
import { cliRunner } from '../harness/cli.js';
import { GATEWAY_ADMIN_TOKEN, startGateway, type TestGateway } from '../harness/gateway.js';
import { startMosquitto, type MosquittoBroker } from '../harness/mosquitto.js';
import { testPrefix } from '../harness/redis.js';

const start = cliRunner();

async function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { proc, out } = start(args, env);
  await waitForExit(proc);
  return { code: proc.exitCode, ...out };
}

describe('syncgate timeline, trace, lag and rule-test', () => {
  let broker: MosquittoBroker;
  let gw: TestGateway;
  let env: Record<string, string>;
  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
    gw = await startGateway({
      redisUrl: inject('redisUrl'),
      prefix: testPrefix('cliconsole'),
      config: {
        rooms: [{ id: 'plant', links: [{ endpoint: 'mqtt', target: 'plant/+device/alert', options: { decode: 'text' } }] }],
        adapters: { mqtt: { type: 'mqtt', url: broker.url, clientId: `sg-cli-console-${process.pid}`, reconnect: { minMs: 100, maxMs: 500 } } },
      },
    });
    await waitFor(async () => (await gw.gateway.status()).adapters['mqtt']?.ready === true, { timeoutMs: 30_000, what: 'the MQTT adapter to connect' });
    env = { SYNCGATE_URL: gw.url, SYNCGATE_ADMIN_TOKEN: GATEWAY_ADMIN_TOKEN };
  }, 60_000);
  afterAll(async () => {
    await gw?.stop();
    await broker?.stop();
  });

  it('shows a delivered message in the timeline and its trace, the lag, and runs a rule on a sample', async () => {
    const device = await gw.deviceToken('op', ['plant']);
    const { eventId } = (await gw.device<{ eventId: string }>(device, 'PUT', '/v1/rooms/plant/send/cli1', { kind: 'message', content: { body: 'pump seven pressure low' } })).body;
    await waitFor(async () => (await run(['timeline', 'plant'], env)).stdout.includes('mqtt plant/+device/alert: delivered'), { timeoutMs: 30_000, intervalMs: 500, what: 'the timeline to show the delivery' });
    const page = await run(['timeline', 'plant', '--limit', '5'], env);
    expect(page.code).toBe(0);
    expect(page.stdout).toContain(`${eventId} `);
    expect(page.stdout).toContain('op: pump seven pressure low');

    const trace = await run(['trace', eventId, '--json'], env);
    expect(trace.code).toBe(0);
    expect(JSON.parse(trace.stdout)).toMatchObject({ eventId, room: 'plant', deliveries: [{ endpoint: 'mqtt', state: 'delivered' }] });
    const human = await run(['trace', eventId, '--room', 'plant'], env);
    expect(human.stdout).toMatch(new RegExp(`event ${eventId} in plant\\n {2}idempotency key \\S+`));
    const unknown = await run(['trace', 'no-such-event'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/404 SG_ERR_EVENT_UNKNOWN/);

    await waitFor(async () => /^mqtt\t0 events\t0\.0 s\t0 retrying\t0 dead letters$/m.test((await run(['lag'], env)).stdout), { timeoutMs: 30_000, intervalMs: 500, what: 'lag 0' });
    // and per link
    const lagText = (await run(['lag'], env)).stdout;
    expect(lagText).toMatch(/^links:\n {2}plant → mqtt plant\/\+device\/alert\t\d+\.\d in\/s\t\d+\.\d out\/s\t0 events\t0\.0 s\t0 dead letters$/m);
    const lagJson = JSON.parse((await run(['lag', '--json'], env)).stdout) as { links: unknown[] };
    expect(lagJson.links).toEqual([{ room: 'plant', endpoint: 'mqtt', target: 'plant/+device/alert', events: 0, seconds: 0, retrying: false, deadLetters: 0, inPerSecond: expect.any(Number), outPerSecond: expect.any(Number) }]);

    // the audit trail: empty, then the (empty) discard the admin asked for, by whom
    expect((await run(['audit'], env)).stdout.trim()).toBe('no replay or discard recorded');
    expect((await gw.admin<{ dropped: number }>('POST', '/v1/admin/dead-letters/drop', { all: true })).body.dropped).toBe(0);
    const auditText = await run(['audit'], env);
    expect(auditText.code).toBe(0);
    expect(auditText.stdout).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z\tadmin\tdiscard\t0 of 0\t$/m);
    expect(JSON.parse((await run(['audit', '--json'], env)).stdout)).toMatchObject({ entries: [{ by: 'admin', role: 'admin', action: 'dead-letters.drop', count: 0, done: 0, selection: { all: true } }] });

    const rule = await run(['rule-test', 'sensors/+device/alert', 'sensors/pump-7/alert', '{"level":"high"}', '--option', 'decode=json', '--option', 'template={{device}}: {{level}}', '--json'], env);
    expect(rule.code).toBe(0);
    expect(JSON.parse(rule.stdout)).toMatchObject({ matched: true, message: { content: { body: 'pump-7: high' } } });
    const miss = await run(['rule-test', 'sensors/+device/alert', 'other/topic', '{}'], env);
    expect(miss.code).toBe(1);
    expect(miss.stdout).toMatch(/^no match: the topic other\/topic does not match/);
    const bad = await run(['rule-test', 'sensors/+device/alert', 'sensors/x/alert', '{}', '--option', 'novalue'], env);
    expect(bad.code).toBe(2);
  }, 300_000);

  it('each command has its --help, and the top-level help lists them', async () => {
    const commands = ['timeline', 'trace', 'lag', 'rule-test', 'audit'];
    const results = await Promise.all(commands.map(async (c) => ({ c, r: await run([c, '--help'], env) })));
    for (const { c, r } of results) {
      expect({ c, code: r.code }).toEqual({ c, code: 0 });
      expect(r.stdout).toContain(`Usage: syncgate ${c}`);
    }
    const top = await run(['help'], env);
    for (const c of commands) expect(top.stdout).toContain(`  ${c} `);
  }, 300_000);
});
