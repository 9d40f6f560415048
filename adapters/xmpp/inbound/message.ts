/**
 * Inbound message stanzas, one handler per envelope (normalise.ts
 * `openEnvelope` unwraps carbons and archive results and rejects spoofed ones):
 *
 * - an archive result goes to the MAM query that asked for it (mam.ts reads it);
 * - a groupchat message is queued on its room's archive track; our own
 *   reflection answers the waiting delivery at once (deliver.ts);
 * - a 1:1 message (live or carbon) is queued on the account's archive track.
 *
 * A queued message is normalised when its turn comes, after any catch-up
 * queued before it, and goes on to the ingest path (ingest.ts), where its kind
 * (message, correction, retraction, reaction, marker, receipt) decides which
 * references are resolved; error messages and chat states are skipped there.
 */
import { onTrackFailure } from '../mam.js';
import { bareJid, openEnvelope, type Envelope, type Normalised, type Source } from '../normalise.js';
import type { MucState, XmppAdapterState } from '../state.js';
import { drop } from '../status.js';
import type { ArchiveTrack } from '../track.js';
import type { XmlElement } from '../xml.js';
import { handleParsed, normalise, withDecryption, withoutEcho } from '../ingest.js';
import { onDeviceListEvent } from '../omemo.js';

export function onMessage(s: XmppAdapterState, stanza: XmlElement): void {
  s.counters.received++;
  // A device list someone published (PEP notification, XEP-0163): what the OMEMO device encrypts to.
  if (s.omemo && onDeviceListEvent(s, stanza)) return;
  const env = openEnvelope(stanza, s.account);
  if (env.ok === 'skip') return;
  if (!env.ok) {
    drop(s, env.reason, env.detail, { from: stanza.attrs['from'] });
    return;
  }
  if (env.type === 'archive-result') {
    onArchiveResult(s, env, stanza);
    return;
  }
  const message = env.message;
  if (message.attrs['type'] === 'groupchat') {
    const room = s.rooms.get(bareJid(message.attrs['from']) ?? '');
    if (!room) {
      drop(s, 'no-room', `a groupchat message from ${message.attrs['from']}, a room we are not in`);
      return;
    }
    onGroupchat(s, room, message, env.source);
    return;
  }
  enqueueLive(s, s.accountTrack, message, env.source);
}

/** A MAM result: kept for the query that asked for it, if it comes from the archive we asked. */
function onArchiveResult(s: XmppAdapterState, env: Extract<Envelope, { type: 'archive-result' }>, stanza: XmlElement): void {
  const q = s.pendingQueries.get(env.queryId);
  if (!q || q.archive !== env.from) {
    drop(s, 'archive-stranger', q ? `a result for the archive of ${q.archive} from ${env.from}` : `a result for a query we did not make, from ${env.from}`, { from: stanza.attrs['from'] });
    return;
  }
  q.results.push({ message: env.message, resultId: env.resultId, stamp: env.stamp });
}

/** A live message in a room we are in; our reflection confirms a delivery before it waits in the queue. */
function onGroupchat(s: XmppAdapterState, room: MucState, message: XmlElement, source: Source): void {
  let early: Normalised | undefined;
  // Our reflection confirms a delivery: answer the waiting deliver() now, not after the queue.
  if (room.facts && s.reflectionWaiters.size > 0) {
    early = normalise(s, message, source);
    if (early.ok === true && early.value.fromUs && early.value.echoOf !== undefined) {
      const key = `${room.jid}\0${early.value.echoOf}`;
      const ids = withoutEcho(early.value.ids);
      s.reflected.set(key, ids);
      s.reflectionWaiters.get(key)?.(ids);
    }
  }
  enqueueLive(s, room.track, message, source, early);
}

/** Queues a live message on its archive; it is normalised when its turn comes (room facts are known by then). */
function enqueueLive(s: XmppAdapterState, t: ArchiveTrack, message: XmlElement, source: Source, early?: Normalised): void {
  t.enqueue(
    async () => {
      if (t.resyncPending) {
        // The archive is read again from the last position (see onTrackFailure); this message comes with it, in order.
        s.counters.deferred++;
        return;
      }
      const done = await withDecryption(s, message, async (opened, settle) => {
        const n = early && !settle ? early : normalise(s, opened, source);
        if (n.ok === 'skip') return;
        if (!n.ok) {
          drop(s, n.reason, n.detail, { from: message.attrs['from'] });
          return;
        }
        await handleParsed(s, n.value, t, t.caughtUp, settle);
      });
      if (done === 'replayed') s.counters.duplicate++;
    },
    (err) => onTrackFailure(s, t, err),
  );
}
