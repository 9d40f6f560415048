// `npm start` builds only when the build is missing or older than a source (scripts/build-if-stale.mjs).
import { mkdirSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain .mjs script without type declarations
import { staleReason } from '../../scripts/build-if-stale.mjs';

const reason = staleReason as (root: string) => string | undefined;

describe('npm start: build only when stale', () => {
  it('builds when dist/ is missing, not when it is newer than every source, again after a source changes', () => {
    const root = mkdtempSync(join(tmpdir(), 'sg-build-'));
    mkdirSync(join(root, 'src', 'cli'), { recursive: true });
    mkdirSync(join(root, 'adapters', 'xmpp'), { recursive: true });
    const source = join(root, 'src', 'cli', 'main.ts');
    const adapter = join(root, 'adapters', 'xmpp', 'index.ts');
    for (const f of [source, adapter, join(root, 'package.json'), join(root, 'tsconfig.json')]) writeFileSync(f, '');
    const t0 = new Date('2026-01-01T00:00:00Z');
    for (const f of [source, adapter, join(root, 'package.json'), join(root, 'tsconfig.json')]) utimesSync(f, t0, t0);
    expect(reason(root)).toMatch(/no build/);

    mkdirSync(join(root, 'dist'));
    const stamp = join(root, 'dist', '.build-stamp');
    writeFileSync(stamp, 'built');
    const t1 = new Date('2026-01-01T00:01:00Z');
    utimesSync(stamp, t1, t1);
    expect(reason(root)).toBeUndefined();

    const t2 = new Date('2026-01-01T00:02:00Z');
    utimesSync(adapter, t2, t2);
    expect(reason(root)).toMatch(/adapters changed/);
  });
});
