/**
 * Which replicas run, with their build and configuration (the console's
 * Overview): each replica writes `{replicaId, version, configHash, seenAt}`
 * to the shared state once a lease period; the status lists those seen
 * recently and flags a configuration that differs between them (drift).
 * The hash leaves secrets out (tokens, passwords, URLs that may carry
 * credentials), so it says nothing about them.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StateStore } from '../core/ports.js';
import { isReplicaRates, type ReplicaRates } from './rates.js';

export const REPLICAS_NS = 'replicas';

export interface ReplicaRecord {
  readonly replicaId: string;
  readonly version: string;
  readonly configHash: string;
  readonly startedAt: number;
  readonly seenAt: number;
  /** its events in and out per second, per adapter and link (rates.ts), when measured */
  readonly rates?: ReplicaRates;
}

export interface ReplicaView extends ReplicaRecord {
  /** its configuration hash differs from the one most replicas have */
  readonly drift: boolean;
}

const SECRET_KEY = /token|password|secret|^url$|^nodes$/i;

function withoutSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutSecrets);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => [k, SECRET_KEY.test(k) ? '<secret>' : withoutSecrets(v)]),
  );
}

/** sha256 (first 12 hex digits) of the configuration without its secrets and without `replicaId` */
export function configHash(config: object): string {
  const { replicaId: _ignored, ...rest } = config as Record<string, unknown>;
  return createHash('sha256').update(JSON.stringify(withoutSecrets(rest))).digest('hex').slice(0, 12);
}

export function buildVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? 'unknown';
    dir = dirname(dir);
  }
  return 'unknown';
}

export async function announceReplica(state: StateStore, record: ReplicaRecord): Promise<void> {
  await state.set(REPLICAS_NS, record.replicaId, JSON.stringify(record));
}

/** replicas seen within `freshMs`, with drift flagged against the most common configuration */
export async function listReplicas(state: StateStore, freshMs: number, now = Date.now()): Promise<ReplicaView[]> {
  const records: ReplicaRecord[] = [];
  for (const [, raw] of await state.entries(REPLICAS_NS)) {
    try {
      const r = JSON.parse(raw) as ReplicaRecord;
      if (typeof r.replicaId === 'string' && typeof r.seenAt === 'number' && now - r.seenAt <= freshMs) {
        const { rates, ...rest } = r;
        records.push(isReplicaRates(rates) ? { ...rest, rates } : rest);
      }
    } catch {
      // a damaged record: not listed
    }
  }
  const counts = new Map<string, number>();
  for (const r of records) counts.set(r.configHash, (counts.get(r.configHash) ?? 0) + 1);
  const usual = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
  return records.sort((a, b) => (a.replicaId < b.replicaId ? -1 : 1)).map((r) => ({ ...r, drift: counts.size > 1 && r.configHash !== usual }));
}
