#!/usr/bin/env node
/**
 * Builds the operator console (console/) into dist/console: the TypeScript
 * type-checked, bundled with its front-end stack (Preact + htm) by esbuild
 * into one script, next to the page and the style sheet. Nothing is fetched
 * at run time: the gateway serves these three files at /console/.
 *
 *   node scripts/build-console.mjs [OUT_DIR]
 *
 * Prints the gzipped size of what a browser downloads (the budget is 300 KB).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export async function buildConsole(out = join(root, 'dist', 'console'), { typecheck = true } = {}) {
  if (typecheck) {
    const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'console', 'tsconfig.json'), '--noEmit'], { stdio: 'inherit' });
    if (tsc.status !== 0) throw new Error('console: type errors');
  }
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: [join(root, 'console', 'src', 'app.ts')],
    outfile: join(out, 'app.js'),
    bundle: true,
    format: 'esm',
    minify: true,
    target: 'es2022',
    legalComments: 'none',
    logLevel: 'warning',
  });
  for (const file of ['index.html', 'style.css']) copyFileSync(join(root, 'console', file), join(out, file));
  const gzipped = ['index.html', 'style.css', 'app.js'].reduce((n, f) => n + gzipSync(readFileSync(join(out, f))).length, 0);
  return { out, gzipped };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { out, gzipped } = await buildConsole(process.argv[2]);
  process.stdout.write(`console: ${out} (${(gzipped / 1024).toFixed(1)} KB gzipped)\n`);
}
