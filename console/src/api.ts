/**
 * The console talks to the public admin API only, with the bearer token the
 * operator signed in with (kept in sessionStorage: gone with the tab, never in
 * a URL or a cookie).
 */

const TOKEN_KEY = 'syncgate.console.token';

export function storedToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function storeToken(token: string | undefined): void {
  if (token === undefined) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export async function api<T>(token: string, method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `the gateway cannot be reached (${err instanceof Error ? err.message : String(err)})`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const err = (json ?? {}) as { code?: unknown; message?: unknown };
    throw new ApiError(res.status, typeof err.code === 'string' ? err.code : `HTTP_${res.status}`, typeof err.message === 'string' ? err.message : `HTTP ${res.status}`);
  }
  return json as T;
}

// --- what the admin API answers (the parts the console shows)

export interface Identity {
  readonly role: 'admin' | 'viewer';
  readonly name: string;
}

export interface AdapterStatus {
  readonly protocol: string;
  readonly state: string;
  readonly holder?: string;
  readonly connected: boolean;
  readonly ready: boolean;
  readonly lastError?: { readonly message: string; readonly at: string };
  readonly links: ReadonlyArray<{ readonly room: string; readonly target: string }>;
  readonly delivery?: { readonly partitionsHeld: number; readonly lastDelivery?: { readonly lagMs: number; readonly at: string } };
  /** all replicas together */
  readonly rates?: { readonly inPerSecond: number; readonly outPerSecond: number };
  /** this replica only */
  readonly replicaRates?: { readonly inPerSecond: number; readonly outPerSecond: number };
}

export interface Status {
  readonly log: { readonly backend: string; readonly durable: boolean; readonly available: boolean; readonly unavailablePartitions?: readonly number[] };
  readonly adapters: Readonly<Record<string, AdapterStatus>>;
  readonly replicas?: ReadonlyArray<{ readonly replicaId: string; readonly version: string; readonly configHash: string; readonly startedAt: number; readonly seenAt: number; readonly drift: boolean }>;
}

export interface LinkLag {
  readonly room: string;
  readonly endpoint: string;
  readonly target: string;
  readonly events: number;
  readonly seconds: number;
  readonly retrying: boolean;
  readonly deadLetters: number;
  readonly capped?: boolean;
  /** all replicas together */
  readonly inPerSecond?: number;
  readonly outPerSecond?: number;
}

export interface Lag {
  readonly adapters: Readonly<Record<string, { readonly events: number; readonly seconds: number; readonly retrying: number; readonly deadLetters: number }>>;
  readonly links?: readonly LinkLag[];
}

export interface RoomLink {
  readonly endpoint: string;
  readonly target: string;
  readonly options?: Readonly<Record<string, string | number | boolean>>;
}

export interface Room {
  readonly id: string;
  readonly name?: string;
  readonly links: readonly RoomLink[];
}

export interface LogEvent {
  readonly eventId: string;
  readonly kind: string;
  readonly room: string;
  readonly idem?: string;
  readonly sender?: { readonly uid?: string; readonly native?: string; readonly display?: string; readonly proto?: string };
  readonly origin: { readonly proto: string; readonly via: string; readonly ids: Readonly<Record<string, string>> };
  readonly ts: { readonly received: number; readonly origin?: number };
  readonly content?: { readonly body?: string };
  readonly rel?: Readonly<Record<string, string | undefined>>;
  readonly reaction?: { readonly keys?: readonly string[] };
}

export interface Delivery {
  readonly endpoint: string;
  readonly target: string;
  readonly state: 'delivered' | 'pending' | 'retrying' | 'dead-lettered' | 'discarded' | 'origin';
  readonly nativeIds?: Readonly<Record<string, string>>;
  readonly at?: number;
  readonly attempt?: number;
  readonly nextAt?: number;
  readonly error?: string;
  readonly deadLetter?: string;
}

export interface TimelinePage {
  readonly events: ReadonlyArray<{ readonly event: LogEvent; readonly deliveries: readonly Delivery[] }>;
  readonly next?: string;
  readonly limited: boolean;
}

export interface Trace {
  readonly room: string;
  readonly eventId: string;
  readonly idempotencyKey: string;
  readonly origin: LogEvent['origin'];
  readonly received: number;
  readonly event: LogEvent;
  readonly deliveries: readonly Delivery[];
}

export interface DeadLetter {
  readonly id: string;
  readonly group: string;
  readonly room: string;
  readonly feedId: string;
  readonly eventId: string;
  readonly reason: string;
  readonly attempts: number;
  readonly ts: number;
  readonly event?: LogEvent;
}

export interface Device {
  readonly deviceId: string;
  readonly user: string;
  readonly name?: string;
  /** from GET /v1/admin/devices/lag: when it last synced, and how far behind it is */
  readonly lastSyncAt?: number;
  readonly events?: number;
  readonly seconds?: number;
}

export interface RuleResult {
  readonly matched: boolean;
  readonly message?: unknown;
  readonly error?: string;
}

export interface TimelineEntry {
  readonly event: LogEvent;
  readonly deliveries: readonly Delivery[];
}

/** what `GET /v1/admin/rooms/:room/live` sends */
export type LiveFrame =
  | { readonly name: 'snapshot'; readonly data: TimelinePage }
  | { readonly name: 'entry'; readonly data: TimelineEntry }
  | { readonly name: 'deliveries'; readonly data: { readonly eventId: string; readonly deliveries: readonly Delivery[] } }
  | { readonly name: 'heartbeat' | 'close'; readonly data: unknown };

/**
 * Follows a room's live timeline (server-sent events read with fetch, so the
 * token stays in the Authorization header). Reconnects after a drop, waiting
 * longer each time (1 s … 15 s); each connection starts with a snapshot.
 * Returns a function that stops it.
 */
export function followRoom(token: string, room: string, onFrame: (frame: LiveFrame) => void, onError: (message: string | undefined) => void): () => void {
  const abort = new AbortController();
  let wait = 1000;
  const connect = async (): Promise<void> => {
    try {
      const res = await fetch(`/v1/admin/rooms/${encodeURIComponent(room)}/live?limit=50`, {
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
        cache: 'no-store',
        signal: abort.signal,
      });
      if (!res.ok || !res.body) {
        const err = (await res.json().catch(() => ({}))) as { code?: unknown; message?: unknown };
        throw new ApiError(res.status, typeof err.code === 'string' ? err.code : `HTTP_${res.status}`, typeof err.message === 'string' ? err.message : `HTTP ${res.status}`);
      }
      onError(undefined);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let at: number;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const name = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (name === undefined || data === undefined) continue;
          wait = 1000;
          onFrame({ name, data: JSON.parse(data) } as LiveFrame);
        }
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      onError(err instanceof ApiError ? `${err.message} (${err.code})` : 'the live timeline was interrupted; reconnecting');
    }
    if (abort.signal.aborted) return;
    setTimeout(() => void connect(), wait);
    wait = Math.min(wait * 2, 15_000);
  };
  void connect();
  return () => abort.abort();
}

/** one entry of GET /v1/admin/audit */
export interface AuditEntry {
  readonly id: string;
  readonly at: number;
  readonly by: string;
  readonly role: 'admin' | 'viewer';
  readonly action: 'dead-letters.replay' | 'dead-letters.drop';
  readonly ids: readonly string[];
  readonly count: number;
  readonly done: number;
  readonly selection?: { readonly all?: boolean; readonly group?: string };
}
