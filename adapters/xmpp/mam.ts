/**
 * Catch-up from an archive (XEP-0313 MAM), our account's or a room's: after
 * every new session, page through the archive from the persisted position
 * (catchup.ts) and hand each result to the ingest path, inside the archive's
 * queue (track.ts), so it runs before the live messages that arrived meanwhile.
 * A first sight of an archive only notes its newest entry (or reads
 * `initialHistoryMs` of it); a position gone from the archive falls back to a
 * time-bounded read. A failed catch-up, or a failed append of a live message,
 * makes the archive be read again from the position later.
 */
import { randomUUID } from 'node:crypto';
import { backoffDelay } from '../../src/core/backoff.js';
import { stanzaErrorCondition } from './errors.js';
import { handleParsed, normalise, withDecryption } from './ingest.js';
import { mamQuery, parseFin, type MamFin } from './protocol.js';
import type { PendingQuery, XmppAdapterState } from './state.js';
import { drop } from './status.js';
import type { ArchiveTrack } from './track.js';

/** how far before the last position's time the item-not-found fallback starts, for clock differences */
const FALLBACK_MARGIN_MS = 10 * 60_000;

/** Queues a catch-up of the archive behind what its track already holds. */
export function scheduleCatchup(s: XmppAdapterState, t: ArchiveTrack, gen: number): void {
  t.catchingUp = true;
  t.enqueue(
    () => runCatchup(s, t, gen),
    (err) => s.log.error({ err, archive: t.archive }, 'catch-up failed'),
  );
}

/** Runs a catch-up inside the track's queue; on failure it is tried again later. */
export async function runCatchup(s: XmppAdapterState, t: ArchiveTrack, gen: number): Promise<void> {
  t.catchingUp = true;
  try {
    await catchUp(s, t, gen);
  } catch (err) {
    s.counters.catchupFailures++;
    if (gen !== s.generation || s.stopping) return;
    // Live messages wait for the next try, which reads them from the archive in order.
    t.resyncPending = true;
    s.log.warn({ err, archive: t.archive }, 'catch-up failed; trying again');
    setTimeout(() => {
      if (gen !== s.generation || s.stopping || t.catchingUp || t.caughtUp) return;
      if (t !== s.accountTrack && !s.rooms.get(t.archive)?.joined) return;
      scheduleCatchup(s, t, gen);
    }, backoffDelay(2, s.config.reconnect.minMs, s.config.reconnect.maxMs)).unref();
  } finally {
    t.catchingUp = false;
  }
}

/** An append failed for good: stop advancing the position and read the archive again from it, later. */
export function onTrackFailure(s: XmppAdapterState, t: ArchiveTrack, err: unknown): void {
  s.log.error({ err, archive: t.archive }, 'could not append an XMPP message; the archive will be read again from the last position');
  t.caughtUp = false;
  const archived = t === s.accountTrack ? s.accountFacts.mam : s.rooms.get(t.archive)?.facts?.mam === true;
  // Without an archive there is nothing to read again: later messages go on live.
  if (!archived) {
    t.caughtUp = true;
    return;
  }
  t.resyncPending = true;
  const gen = s.generation;
  setTimeout(() => {
    if (gen !== s.generation || s.stopping || t.catchingUp) return;
    if (t === s.accountTrack) scheduleCatchup(s, t, gen);
    else {
      const room = s.rooms.get(t.archive);
      if (room?.joined && room.track === t) scheduleCatchup(s, t, gen);
    }
  }, backoffDelay(1, s.config.reconnect.minMs, s.config.reconnect.maxMs)).unref();
}

async function catchUp(s: XmppAdapterState, t: ArchiveTrack, gen: number): Promise<void> {
  if (gen !== s.generation || !s.connection.online) return;
  const { config, log } = s;
  const t0 = Date.now();
  let handled = 0;
  const position = await t.load();
  let after: string | undefined = position?.id;
  let start: number | undefined;
  if (position && position.id === undefined) {
    // The archive was empty at first sight: everything archived since then (less a margin for clocks; the log dedupes).
    start = Math.max(position.ts - FALLBACK_MARGIN_MS, Date.now() - config.catchupMaxAgeMs);
  }
  if (!position) {
    if (config.initialHistoryMs > 0) start = Date.now() - config.initialHistoryMs;
    else {
      await followFromNewest(s, t, t0);
      return;
    }
  }
  for (;;) {
    if (gen !== s.generation || s.stopping) return;
    let page: Awaited<ReturnType<typeof mamPage>>;
    try {
      page = await mamPage(s, t.archive, { after, start, max: config.mamPageSize });
    } catch (err) {
      if (stanzaErrorCondition(err) === 'item-not-found' && after !== undefined && position) {
        start = Math.max(position.ts - FALLBACK_MARGIN_MS, Date.now() - config.catchupMaxAgeMs);
        log.warn({ archive: t.archive, after, since: new Date(start).toISOString() }, 'the last archived id is gone from the archive; catching up by time');
        after = undefined;
        continue;
      }
      throw err;
    }
    handled += await handlePage(s, t, page.results);
    const last = page.fin.last ?? page.results.at(-1)?.resultId;
    if (page.fin.complete || page.results.length === 0 || last === undefined) break;
    after = last;
  }
  if (gen !== s.generation) return;
  // Nothing archived in the initial history window: the next catch-up reads from the time of this one.
  if (t.current === undefined) t.advance({ ts: t0 });
  t.caughtUp = true;
  t.resyncPending = false;
  s.counters.catchups++;
  log.info({ archive: t.archive, messages: handled, ms: Date.now() - t0 }, 'caught up with the archive');
}

/**
 * First time: no history, just the archive's newest id, so nothing after it is missed later.
 * An empty archive leaves the time of this query instead: the next catch-up reads from then.
 */
async function followFromNewest(s: XmppAdapterState, t: ArchiveTrack, t0: number): Promise<void> {
  const { results } = await mamPage(s, t.archive, { before: '', max: 1 });
  const newest = results.at(-1);
  t.advance(newest ? { id: newest.resultId, ts: newest.stamp ?? Date.now() } : { ts: t0 });
  t.caughtUp = true;
  s.log.info({ archive: t.archive, newest: newest?.resultId }, 'archive seen for the first time; following it from its newest entry');
}

/** Hands one page of results to the ingest path, in order; returns how many were messages to append. */
async function handlePage(s: XmppAdapterState, t: ArchiveTrack, results: PendingQuery['results']): Promise<number> {
  let handled = 0;
  for (const r of results) {
    s.counters.archived++;
    const done = await withDecryption(s, r.message, async (message, settle) => {
      const n = normalise(s, message, { kind: 'archive', archive: t.archive, resultId: r.resultId, stamp: r.stamp });
      if (n.ok === 'skip') return false;
      if (!n.ok) {
        drop(s, n.reason, n.detail, { archive: t.archive });
        return false;
      }
      await handleParsed(s, n.value, t, true, settle);
      return true;
    });
    if (done === true) {
      handled++;
      continue;
    }
    // Skipped, dropped, or an OMEMO message decrypted and bridged before (its key is used): past it.
    if (done === 'replayed') s.counters.duplicate++;
    t.advance({ id: r.resultId, ts: r.stamp ?? Date.now() });
  }
  return handled;
}

/** One MAM query: the results arrive as messages (collected by the inbound message handler), then the `<fin/>`. */
async function mamPage(
  s: XmppAdapterState,
  archive: string,
  q: { after?: string | undefined; before?: string | undefined; start?: number | undefined; max: number },
): Promise<{ results: PendingQuery['results']; fin: MamFin }> {
  const queryId = randomUUID();
  const pending: PendingQuery = { archive, results: [] };
  s.pendingQueries.set(queryId, pending);
  try {
    const reply = await s.connection.request(mamQuery({ to: archive === s.account ? undefined : archive, queryId, ...q }), s.config.iqTimeoutMs);
    const fin = parseFin(reply) ?? { complete: true, first: undefined, last: undefined };
    return { results: pending.results, fin };
  } finally {
    s.pendingQueries.delete(queryId);
  }
}
