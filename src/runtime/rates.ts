/**
 * Events in and out per second, per adapter and per link (room × adapter),
 * for the whole deployment (the console's Overview, `GET /v1/admin/status`,
 * `GET /v1/admin/lag`, `syncgate lag`).
 *
 * The hot path only adds to an in-memory count (one Map entry per link on
 * this replica, no Redis command): the sink counts each appended inbound
 * event, the delivery engine each confirmed delivery. Every RATE_SAMPLE_MS
 * the replica samples its counts and publishes the rates over its last
 * RATE_WINDOW_SAMPLES samples with its replica record (one write it makes
 * anyway, see replicas.ts); the status sums this replica's live rates and the
 * other fresh replicas' published ones.
 */

export const RATE_SAMPLE_MS = 5000;
/** samples kept: the rates cover the last (RATE_WINDOW_SAMPLES - 1) × RATE_SAMPLE_MS, about 10 s */
export const RATE_WINDOW_SAMPLES = 3;
/** links published per replica (the busiest first): bounds the replica record */
export const RATE_LINKS_MAX = 1000;

export interface Rate {
  readonly inPerSecond: number;
  readonly outPerSecond: number;
}

export interface LinkRate extends Rate {
  readonly room: string;
  /** the adapter (link endpoint) */
  readonly endpoint: string;
}

/** one replica's rates, as published with its replica record */
export interface ReplicaRates {
  /** the seconds the rates are measured over */
  readonly windowSeconds: number;
  readonly adapters: Readonly<Record<string, Rate>>;
  /** links with traffic in the window (at most RATE_LINKS_MAX) */
  readonly links: readonly LinkRate[];
}

interface Counts {
  in: number;
  out: number;
}

const SEP = '\u0000';

export class RateMeter {
  /** `<endpoint>\0<room>` → running counts on this replica */
  private readonly counts = new Map<string, Counts>();
  private readonly samples: Array<{ at: number; counts: Map<string, Counts> }> = [];

  countIn(endpoint: string, room: string): void {
    this.entry(endpoint, room).in++;
  }

  countOut(endpoint: string, room: string): void {
    this.entry(endpoint, room).out++;
  }

  private entry(endpoint: string, room: string): Counts {
    const key = endpoint + SEP + room;
    let c = this.counts.get(key);
    if (!c) {
      c = { in: 0, out: 0 };
      this.counts.set(key, c);
    }
    return c;
  }

  sample(now = Date.now()): void {
    this.samples.push({ at: now, counts: new Map([...this.counts].map(([k, c]) => [k, { in: c.in, out: c.out }])) });
    while (this.samples.length > RATE_WINDOW_SAMPLES) this.samples.shift();
  }

  /** the rates from the oldest sample kept to now; undefined before a second has passed since the first sample */
  rates(adapters: readonly string[], now = Date.now()): ReplicaRates | undefined {
    const first = this.samples[0];
    if (!first || now - first.at < 1000) return undefined;
    const seconds = (now - first.at) / 1000;
    const byAdapter = new Map<string, { in: number; out: number }>(adapters.map((a) => [a, { in: 0, out: 0 }]));
    const links: LinkRate[] = [];
    for (const [key, c] of this.counts) {
      const then = first.counts.get(key) ?? { in: 0, out: 0 };
      const dIn = c.in - then.in;
      const dOut = c.out - then.out;
      const at = key.indexOf(SEP);
      const endpoint = key.slice(0, at);
      const a = byAdapter.get(endpoint) ?? { in: 0, out: 0 };
      a.in += dIn;
      a.out += dOut;
      byAdapter.set(endpoint, a);
      if (dIn > 0 || dOut > 0) links.push({ room: key.slice(at + 1), endpoint, inPerSecond: dIn / seconds, outPerSecond: dOut / seconds });
    }
    links.sort((x, y) => y.inPerSecond + y.outPerSecond - (x.inPerSecond + x.outPerSecond));
    return {
      windowSeconds: seconds,
      adapters: Object.fromEntries([...byAdapter].map(([name, c]) => [name, { inPerSecond: c.in / seconds, outPerSecond: c.out / seconds }])),
      links: links.slice(0, RATE_LINKS_MAX),
    };
  }
}

/** The deployment's rates: the sum of the replicas' (each at most once). */
export function sumRates(replicas: ReadonlyArray<ReplicaRates | undefined>): { adapters: Record<string, Rate>; links: LinkRate[] } {
  const adapters = new Map<string, { in: number; out: number }>();
  const links = new Map<string, { room: string; endpoint: string; in: number; out: number }>();
  for (const r of replicas) {
    if (!r) continue;
    for (const [name, rate] of Object.entries(r.adapters)) {
      const a = adapters.get(name) ?? { in: 0, out: 0 };
      a.in += rate.inPerSecond;
      a.out += rate.outPerSecond;
      adapters.set(name, a);
    }
    for (const l of r.links) {
      const key = l.endpoint + SEP + l.room;
      const s = links.get(key) ?? { room: l.room, endpoint: l.endpoint, in: 0, out: 0 };
      s.in += l.inPerSecond;
      s.out += l.outPerSecond;
      links.set(key, s);
    }
  }
  return {
    adapters: Object.fromEntries([...adapters].map(([name, a]) => [name, { inPerSecond: a.in, outPerSecond: a.out }])),
    links: [...links.values()].map((l) => ({ room: l.room, endpoint: l.endpoint, inPerSecond: l.in, outPerSecond: l.out })),
  };
}

/** whether a published value is a ReplicaRates (records are read from the shared store) */
export function isReplicaRates(value: unknown): value is ReplicaRates {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<ReplicaRates>;
  return typeof v.windowSeconds === 'number' && typeof v.adapters === 'object' && v.adapters !== null && Array.isArray(v.links);
}
