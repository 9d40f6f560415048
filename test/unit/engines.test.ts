/**
 * The Node versions we claim are the ones every installed package supports:
 * the `engines.node` range of package.json lies inside the `engines.node` of
 * every package in package-lock.json (so `npm ci` on any of them prints no
 * EBADENGINE warning and skips no optional package), and the places that
 * repeat the range — .ci/run's check, README, the Dockerfile's Node line —
 * agree with it.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface LockEntry {
  readonly version?: string;
  readonly engines?: { readonly node?: string };
}

function read(file: string): string {
  return readFileSync(join(ROOT, file), 'utf8');
}

const pkg = JSON.parse(read('package.json')) as { engines?: { node?: string } };
const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, LockEntry> };
const ourRange = pkg.engines?.node ?? '';

/** The lowest version of each `||` alternative of a range: ^20.19.0 || >=24 → 20.19.0, 24.0.0. */
function lowestOfEachAlternative(range: string): string[] {
  return new semver.Range(range).set.map((comparators) => semver.minVersion(comparators.map((c) => c.value).join(' '))?.version ?? '?');
}

describe('Node engines', () => {
  it('package.json states a valid range, and package-lock.json records the same one', () => {
    expect(semver.validRange(ourRange)).not.toBeNull();
    expect(lock.packages['']?.engines?.node).toBe(ourRange);
  });

  it("lies inside every locked package's engines.node", () => {
    const lowest = lowestOfEachAlternative(ourRange);
    const excluding: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      const theirs = entry.engines?.node;
      if (path === '' || theirs === undefined) continue;
      if (semver.subset(ourRange, theirs)) continue;
      const excluded = lowest.filter((v) => !semver.satisfies(v, theirs));
      excluding.push(`${path.replace(/^.*node_modules\//, '')}@${entry.version ?? '?'} needs ${theirs}${excluded.length > 0 ? ` (excludes ${excluded.join(', ')})` : ''}`);
    }
    expect(excluding).toEqual([]);
  });

  it(".ci/run's Node check accepts exactly the versions of the range", () => {
    const line = read('.ci/run')
      .split('\n')
      .find((l) => l.startsWith("node -e '") && l.includes('process.versions.node'));
    const script = line?.match(/^node -e '(.*)'$/)?.[1];
    expect(script).toBeTypeOf('string');
    const accepts = (version: string): boolean => {
      let exited = false;
      const fakeProcess = {
        versions: { node: version },
        version: `v${version}`,
        exit: (): never => {
          exited = true;
          throw new Error('exit');
        },
      };
      try {
        vm.runInNewContext(script ?? '', { process: fakeProcess, console: { error: () => undefined } });
      } catch (err) {
        if (!exited) throw err;
      }
      return !exited;
    };
    const disagree: string[] = [];
    for (let major = 16; major <= 30; major++) {
      for (const minor of [0, 1, 11, 12, 13, 18, 19, 20, 30]) {
        const version = `${major}.${minor}.0`;
        if (accepts(version) !== semver.satisfies(version, ourRange)) disagree.push(version);
      }
    }
    expect(disagree).toEqual([]);
  });

  it('README states the range, and the Dockerfile builds on a Node line inside it', () => {
    expect(read('README.md')).toContain(`\`${ourRange}\``);
    const nodeLine = read('Dockerfile').match(/^ARG NODE_VERSION=(\d+)$/m)?.[1];
    expect(nodeLine).toBeTypeOf('string');
    expect(semver.subset(`${nodeLine ?? ''}.x`, ourRange)).toBe(true);
  });
});
