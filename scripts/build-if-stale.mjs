#!/usr/bin/env node
/**
 * `npm start` runs this first: it builds (npm run build) only when dist/ is
 * missing or older than a source, so a start from an up-to-date build logs
 * its first line at once instead of after a full tsc run.
 *
 * "Up to date" = dist/.build-stamp (written by `npm run build` after tsc and
 * the Lua copy succeeded) is newer than every file under src/, adapters/ and console/
 * and than the tsconfig and package files.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const STAMP = join('dist', '.build-stamp');
const INPUT_DIRS = ['src', 'adapters', 'console'];
const INPUT_FILES = ['package.json', 'tsconfig.json', 'tsconfig.build.json'];

function newestUnder(path) {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    return 0;
  }
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestUnder(join(path, entry)));
  return newest;
}

/** Why the build in `root` must be (re)made, or undefined when it is up to date. */
export function staleReason(root) {
  let built;
  try {
    built = statSync(join(root, STAMP)).mtimeMs;
  } catch {
    return `no build (${STAMP} missing)`;
  }
  for (const input of [...INPUT_DIRS, ...INPUT_FILES]) {
    if (newestUnder(join(root, input)) > built) return `${input} changed since the last build`;
  }
  return undefined;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = process.cwd();
  const why = staleReason(root);
  if (why !== undefined) {
    console.error(`syncgate: building (${why}) …`);
    const result = spawnSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
    process.exit(result.status ?? 1);
  }
}
