/**
 * The benchmark report: each bench file exports a section; run.ts prints them.
 * Figures are compared with a baseline measured in the same run, never with
 * numbers from elsewhere.
 */
export interface BenchContext {
  /** a Redis to measure against (REDIS_URL or one started by the harness) */
  readonly redisUrl: string;
  /** BENCH_QUICK=1: smaller sizes, for a smoke run */
  readonly quick: boolean;
}

export interface BenchRow {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  /** the same measurement on the baseline (e.g. raw XADD) */
  readonly baseline?: number;
  /** value / baseline, or the figure the goal is about */
  readonly ratio?: number;
  readonly goal?: string;
  readonly note?: string;
}

export interface BenchSection {
  readonly title: string;
  readonly rows: BenchRow[];
}

export type Bench = (ctx: BenchContext) => Promise<BenchSection>;

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

function fmt(n: number | undefined): string {
  if (n === undefined || Number.isNaN(n)) return '';
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString('en-US');
  return n.toFixed(Math.abs(n) >= 10 ? 1 : 2);
}

export function formatSection(section: BenchSection): string {
  const header = ['measurement', 'value', 'unit', 'baseline', 'ratio', 'goal', 'note'];
  const rows = section.rows.map((r) => [r.name, fmt(r.value), r.unit, fmt(r.baseline), fmt(r.ratio), r.goal ?? '', r.note ?? '']);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [`## ${section.title}`, line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
