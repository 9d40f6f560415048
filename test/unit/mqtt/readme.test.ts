// The README documents the MQTT adapter's contract: every rule option, every
// drop reason, the out payload's user properties, and how sender identity
// depends on broker ACLs.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RULE_OPTION_NAMES } from '../../../adapters/mqtt/config.js';
import { DROP_REASONS } from '../../../adapters/mqtt/errors.js';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`#### ${title}`);
  if (start < 0) return '';
  // The next heading of any level (code blocks have "# comments", not "## " or "#### ").
  const rest = readme.slice(start + 5);
  const end = rest.search(/\n#{2,4} /);
  return readme.slice(start, end < 0 ? undefined : start + 5 + end);
}

describe('README: MQTT', () => {
  it('lists every rule option in the rule options table', () => {
    const table = section('MQTT rule options');
    for (const name of RULE_OPTION_NAMES) expect(table, name).toContain(`| \`${name}\` |`);
  });

  it('names every drop reason', () => {
    for (const reason of DROP_REASONS) expect(readme, reason).toContain(`\`${reason}\``);
  });

  it('documents the out payload, commands, the sync topic and identity through broker ACLs', () => {
    const out = section('MQTT out topic: payload and cursors');
    for (const p of ['sg-eid', 'sg-cursor', 'sg-pos', 'sg-kind', 'application/vnd.syncgate.event+json;v=1']) expect(out, p).toContain(p);
    const commands = section('MQTT commands and replies');
    for (const p of ['responseTopic', 'allow', 'response-wrong-device', 'timeoutTemplate']) expect(commands, p).toContain(p);
    expect(section('MQTT sync: catch-up from a cursor over MQTT')).toContain('sg/v1/sync/+device');
    const identity = section('MQTT sender identity and broker ACLs');
    expect(identity).toContain('pattern write sensors/%u/#');
    expect(identity).toContain('never from the payload');
  });
});
