/**
 * http.viewerTokens and http.console (issue 25): viewer tokens are secrets
 * like the admin token — from the file, SYNCGATE_VIEWER_TOKENS (comma
 * separated) or SYNCGATE_VIEWER_TOKENS_FILE — and a bad one is reported
 * without showing it; the console is on unless turned off.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, resolveConfig } from '../../src/config/index.js';

describe('http.viewerTokens and http.console', () => {
  it('defaults: no viewer tokens, the console served', () => {
    const c = resolveConfig({});
    expect(c.http.viewerTokens).toEqual([]);
    expect(c.http.console).toBe(true);
    expect(resolveConfig({ http: { console: false } }).http.console).toBe(false);
  });

  it('SYNCGATE_HTTP_CONSOLE turns the console off or on (what the Helm chart sets from http.console)', async () => {
    expect((await loadConfig({ env: { SYNCGATE_HTTP_CONSOLE: 'false' } })).http.console).toBe(false);
    expect((await loadConfig({ env: { SYNCGATE_HTTP_CONSOLE: 'true' } })).http.console).toBe(true);
    const err = await loadConfig({ env: { SYNCGATE_HTTP_CONSOLE: 'maybe' } }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/\/http\/console/);
  });

  it('reads them from SYNCGATE_VIEWER_TOKENS and from SYNCGATE_VIEWER_TOKENS_FILE', async () => {
    expect((await loadConfig({ env: { SYNCGATE_VIEWER_TOKENS: 'viewer-one-0123456789, viewer-two-0123456789' } })).http.viewerTokens).toEqual(['viewer-one-0123456789', 'viewer-two-0123456789']);
    const dir = await mkdtemp(join(tmpdir(), 'sg-viewers-'));
    await writeFile(join(dir, 'viewers'), 'viewer-three-0123456789\n');
    expect((await loadConfig({ env: { SYNCGATE_VIEWER_TOKENS_FILE: join(dir, 'viewers') } })).http.viewerTokens).toEqual(['viewer-three-0123456789']);
  });

  it('a viewer token that is too short is a configuration error that does not show it', async () => {
    const err = await loadConfig({ env: { SYNCGATE_VIEWER_TOKENS: 'short-secret' } }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/\/http\/viewerTokens\/0: Expected string length greater or equal to 16/);
    expect(err?.message).not.toContain('short-secret');
  });
});
