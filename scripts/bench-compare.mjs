#!/usr/bin/env node
/**
 * Compares two `BENCH_JSON=file npm run bench` reports row by row:
 *   node scripts/bench-compare.mjs before.json after.json
 * For each measurement found in both: the value and in-run ratio of each run,
 * and after/before of the values. Ratios against a same-run baseline are the
 * figures to compare across runs on a noisy machine; raw values drift with load.
 */
import { readFileSync } from 'node:fs';

const [beforeFile, afterFile] = process.argv.slice(2);
if (!beforeFile || !afterFile) {
  process.stderr.write('usage: node scripts/bench-compare.mjs before.json after.json\n');
  process.exit(2);
}
const load = (file) => JSON.parse(readFileSync(file, 'utf8'));
const before = load(beforeFile);
const after = load(afterFile);

const rowsOf = (report) => {
  const map = new Map();
  for (const section of report.sections) for (const row of section.rows) map.set(`${section.name}: ${row.name}`, row);
  return map;
};
const a = rowsOf(before);
const b = rowsOf(after);
const fmt = (n) => (n === undefined || n === null || Number.isNaN(n) ? '' : Math.abs(n) >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2));

const table = [['measurement', 'unit', 'before', 'after', 'after/before', 'ratio before', 'ratio after']];
for (const [key, rowB] of b) {
  const rowA = a.get(key);
  if (!rowA) continue;
  table.push([key, rowB.unit, fmt(rowA.value), fmt(rowB.value), rowA.value ? fmt(rowB.value / rowA.value) : '', fmt(rowA.ratio), fmt(rowB.ratio)]);
}
const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
process.stdout.write(`before: ${before.started} (${before.machine?.cpuModel ?? '?'}), after: ${after.started} (${after.machine?.cpuModel ?? '?'})\n`);
for (const r of table) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()}\n`);
const onlyOne = [...b.keys()].filter((k) => !a.has(k)).length + [...a.keys()].filter((k) => !b.has(k)).length;
if (onlyOne > 0) process.stdout.write(`(${onlyOne} measurement(s) appear in one report only)\n`);
