/**
 * Encrypted events whose room key has not arrived (yet): held instead of
 * being bridged as "could not be read" at once, and tried again after every
 * /sync batch (the key may come in a later batch's to-device events) and
 * now and then; after `encryption.undecryptableHoldMs` an event still
 * undecryptable is bridged as the undecryptable notice — at once when its
 * sender's m.room_key.withheld came meanwhile (the key will never come). Held events never
 * block the room: later events are bridged meanwhile, and a held one is
 * appended when it can be read (its origin timestamp kept).
 *
 * Durable: a held event is written to the log's state store
 * (`matrix-held:<name>`, the ciphertext as received) before the handler
 * returns, i.e. before the /sync token that acknowledges it is saved; a
 * restart loads them and goes on trying.
 */
import type { Logger } from 'pino';
import type { UndecryptableReason } from '../../../src/core/event.js';
import type { JsonObject } from '../client.js';
import { isObject } from '../normalise.js';
import type { MatrixState } from '../store.js';

export interface HeldEvent {
  readonly event: JsonObject;
  readonly roomId: string;
  readonly reason: UndecryptableReason;
  /** when it was first seen (ms) */
  readonly since: number;
}

export type RetryOutcome = 'released' | 'withheld' | 'held';

export interface HeldDeps {
  readonly state: MatrixState;
  readonly ns: string;
  readonly log: Logger;
  readonly holdMs: number;
  /**
   * handles the event again: `final` bridges it as the notice when it still
   * cannot be read. Resolves `released` (decrypted and bridged), `withheld`
   * (its sender withheld the key meanwhile: bridged as the notice at once)
   * or `held` (still waiting).
   */
  readonly retry: (held: HeldEvent, final: boolean) => Promise<RetryOutcome>;
}

export class HeldEvents {
  private readonly held = new Map<string, HeldEvent>();
  private loaded = false;
  private running: Promise<void> | undefined;
  counters = { held: 0, released: 0, expired: 0, withheld: 0 };

  constructor(private readonly deps: HeldDeps) {}

  get size(): number {
    return this.held.size;
  }

  /** Loads what a previous run held (once). */
  async load(): Promise<void> {
    if (this.loaded) return;
    for (const [id, text] of await this.deps.state.entries(this.deps.ns)) {
      try {
        const h = JSON.parse(text) as unknown;
        if (isObject(h) && isObject(h['event']) && typeof h['roomId'] === 'string' && typeof h['since'] === 'number' && typeof h['reason'] === 'string') {
          this.held.set(id, h as unknown as HeldEvent);
        }
      } catch {
        await this.deps.state.delete(this.deps.ns, id);
      }
    }
    this.loaded = true;
  }

  /** Holds an event (durable when it resolves). False: already past the bound, bridge it as the notice now. */
  async hold(eventId: string, held: HeldEvent): Promise<boolean> {
    const known = this.held.get(eventId);
    const entry = known ?? held;
    if (Date.now() - entry.since >= this.deps.holdMs) return false;
    if (!known) {
      await this.deps.state.set(this.deps.ns, eventId, JSON.stringify(entry));
      this.held.set(eventId, entry);
      this.counters.held++;
    }
    return true;
  }

  /** Tries every held event again (one pass at a time). */
  retryAll(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<void> {
    for (const [id, h] of [...this.held]) {
      const final = Date.now() - h.since >= this.deps.holdMs;
      try {
        const outcome = await this.deps.retry(h, final);
        if (outcome === 'held' && !final) continue;
        if (outcome === 'released') this.counters.released++;
        else if (outcome === 'withheld') this.counters.withheld++;
        else this.counters.expired++;
        this.held.delete(id);
        await this.deps.state.delete(this.deps.ns, id);
      } catch (err) {
        this.deps.log.warn({ err, eventId: id }, 'retrying a held encrypted Matrix event failed; trying again later');
      }
    }
  }
}
