/**
 * The descriptor list of src/runtime (README, "Adding an adapter"): what the
 * config loader, the CLI and the log take from each descriptor holds for
 * every adapter type in the list, not only for the three of today.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ENV_OVERRIDES, resolveConfig } from '../../src/config/index.js';
import { adapterEnvName } from '../../src/core/descriptor.js';
import { isSyncgateError } from '../../src/core/errors.js';
import { createLogger } from '../../src/log/index.js';
import { ADAPTERS } from '../../src/runtime/adapter-list.js';

function problemsOf(run: () => unknown): string[] {
  try {
    run();
    return [];
  } catch (err) {
    if (!isSyncgateError(err)) throw err;
    return (err.details?.['problems'] as string[] | undefined) ?? [];
  }
}

function withPath(path: readonly string[], value: string): Record<string, unknown> {
  return path.reduceRight<Record<string, unknown>>((inner, key, i) => (i === path.length - 1 ? { [key]: value } : { [key]: inner }), {});
}

describe('the adapter descriptor list', () => {
  it('has one descriptor per type, and CLI commands with distinct names', () => {
    const types = ADAPTERS.map((d) => d.type);
    expect(new Set(types).size).toBe(types.length);
    const commands = ADAPTERS.flatMap((d) => (d.commands ?? []).map((c) => c.name));
    expect(new Set(commands).size).toBe(commands.length);
  });

  it.each(ADAPTERS.map((d) => [d.type, d] as const))('%s: every secret is taken from SYNCGATE_ADAPTER_<NAME>_<SECRET> for an adapter of any name', (type, descriptor) => {
    for (const suffix of Object.keys(descriptor.secrets)) {
      const variable = `SYNCGATE_ADAPTER_${adapterEnvName('some-name')}_${suffix}`;
      // the section may be incomplete: what matters is that the variable is a known setting
      const problems = problemsOf(() => resolveConfig({ adapters: { 'some-name': { type } } }, { [variable]: 'value-from-env' }));
      expect(problems.filter((p) => p.includes(variable))).toEqual([]);
      const unknown = problemsOf(() => resolveConfig({ adapters: { 'some-name': { type } } }, { [`SYNCGATE_ADAPTER_OTHER_NAME_${suffix}`]: 'value-from-env' }));
      expect(unknown.join('\n')).toMatch(/SYNCGATE_ADAPTER_OTHER_NAME_\w+ is not a known setting/);
    }
  });

  it.each(ADAPTERS.map((d) => [d.type, d] as const))('%s: short forms SYNCGATE_<TYPE>_<SECRET> are settings for the adapter named like its type', (type, descriptor) => {
    for (const [suffix, secret] of Object.entries(descriptor.secrets)) {
      const variable = `SYNCGATE_${adapterEnvName(type)}_${suffix}`;
      if (secret.shortForm === true) expect(ENV_OVERRIDES[variable]).toEqual(['adapters', type, ...secret.path]);
      else expect(ENV_OVERRIDES[variable]).toBeUndefined();
    }
  });

  it.each(ADAPTERS.map((d) => [d.type, d] as const))('%s: no secret reaches the log when its config section is logged', (_type, descriptor) => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    const logger = createLogger({ destination });
    for (const secret of Object.values(descriptor.secrets)) logger.info({ config: withPath(secret.path, 'scheme://user:hunter2-secret@host/') }, 'adapter config');
    expect(lines).toHaveLength(Object.keys(descriptor.secrets).length);
    expect(lines.join('')).not.toContain('hunter2-secret');
  });
});
