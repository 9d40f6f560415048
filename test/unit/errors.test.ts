import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_TABLE, SyncgateError } from '../../src/core/errors.js';

describe('error table', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it('has unique, well-formed codes with an HTTP status and a message', () => {
    const codes = Object.keys(ERROR_TABLE);
    expect(new Set(codes).size).toBe(codes.length);
    for (const [code, spec] of Object.entries(ERROR_TABLE)) {
      expect(code).toMatch(/^SG_ERR_[A-Z]+(_[A-Z]+)*$/);
      expect(spec.status).toBeGreaterThanOrEqual(400);
      expect(spec.status).toBeLessThan(600);
      expect(spec.message.length).toBeGreaterThan(5);
    }
  });

  it('documents every code in README.md with its status', () => {
    for (const [code, spec] of Object.entries(ERROR_TABLE)) {
      expect(readme, `${code} is not documented`).toMatch(new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${spec.status}\\s*\\|`));
    }
  });

  it('documents no code that is not in the table', () => {
    const documented = [...readme.matchAll(/`(SG_ERR_[A-Z_]+)`/g)].map((m) => m[1]);
    for (const code of documented) expect(Object.keys(ERROR_TABLE)).toContain(code);
  });

  it('serialises to {code, message, details} without the stack', () => {
    const err = new SyncgateError('SG_ERR_ROOM_UNKNOWN', 'ops', { room: 'ops' });
    expect(JSON.parse(JSON.stringify(err))).toEqual({ code: 'SG_ERR_ROOM_UNKNOWN', message: 'No such room: ops', details: { room: 'ops' } });
    expect(err.status).toBe(404);
  });
});
