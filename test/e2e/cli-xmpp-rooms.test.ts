/** `syncgate prosody-config` for the rooms component (xmpp-rooms). */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { waitForExit } from '../harness/free-port.js';
import { cliRunner } from '../harness/cli.js';

const run = cliRunner();

describe('syncgate prosody-config with an xmpp-rooms adapter', () => {
  it('prints the Component block after the bridge account settings, or alone for --adapter', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sgrooms-'));
    const configFile = join(dir, 'config.yaml');
    await writeFile(
      configFile,
      [
        'rooms:',
        '  - id: lobby',
        '    links:',
        '      - { endpoint: rooms, target: lobby }',
        'adapters:',
        '  xmpp: { type: xmpp, service: "xmpp://127.0.0.1:5222", jid: bridge@example.org, password: bridge-pw }',
        '  rooms: { type: xmpp-rooms, service: "xmpp://127.0.0.1:5348", domain: rooms.example.org, secret: component-pw }',
        '',
      ].join('\n'),
    );
    const both = run(['prosody-config', '--config', configFile], {});
    await waitForExit(both.proc);
    expect(both.proc.exitCode).toBe(0);
    expect(both.out.stdout).toContain('"carbons"');
    expect(both.out.stdout).toContain('Component "rooms.example.org"\n');
    expect(both.out.stdout).toContain('component_ports = { 5348 }');
    expect(both.out.stdout).not.toContain('component-pw');

    const alone = run(['prosody-config', '--adapter', 'rooms', '--config', configFile], {});
    await waitForExit(alone.proc);
    expect(alone.proc.exitCode).toBe(0);
    expect(alone.out.stdout).toContain('Component "rooms.example.org"\n');
    expect(alone.out.stdout).not.toContain('"carbons"');
    expect(alone.out.stdout).not.toContain('component-pw');
  }, 120_000);
});
