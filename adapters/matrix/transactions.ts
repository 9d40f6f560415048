/**
 * Appservice mode: a transaction the homeserver pushed to our listener
 * (appservice.ts) → its events and read receipts through inbound/dispatch.ts.
 * Transactions run in order, one at a time; a repeated txnId joins the one
 * in flight. The listener answers 200 only once this resolved, i.e. when
 * every event is durable and the transaction is recorded as completed.
 */
import { createHash } from 'node:crypto';
import type { JsonObject } from './client.js';
import { onTransactionCrypto, untilCryptoOpen } from './crypto/session.js';
import { isObject } from './normalise.js';
import type { MatrixAdapterState } from './state.js';

/** how often completed transaction records past their TTL are removed */
const TXN_PRUNE_EVERY_MS = 3600_000;

export function onTransaction(s: MatrixAdapterState, txnId: string, body: JsonObject): Promise<void> {
  const running = s.txns.inflight.get(txnId);
  if (running) return running;
  const run = s.txns.chain.then(() => processTransaction(s, txnId, body));
  const tracked = run.finally(() => s.txns.inflight.delete(txnId));
  s.txns.inflight.set(txnId, tracked);
  // The chain continues after a failure; the failed transaction comes again from the homeserver.
  s.txns.chain = tracked.catch(() => undefined);
  return tracked;
}

async function processTransaction(s: MatrixAdapterState, txnId: string, body: JsonObject): Promise<void> {
  // Dedupe rests on event ids (idempotency keys); the transaction record only spares the work of a
  // retransmission. A known id with another body is new content (the homeserver's ids restarted
  // after a database reset or restore): processed, and said so.
  const hash = createHash('sha256').update(JSON.stringify(body)).digest('base64url');
  const seen = await s.store.completed(txnId);
  if (seen !== undefined && (seen.hash === undefined || seen.hash === hash)) {
    s.log.debug({ txnId }, 'transaction already processed; answering 200 again');
    return;
  }
  if (seen !== undefined) s.log.warn({ txnId, completedAt: seen.at }, 'known transaction id with a different body (did the homeserver restart its ids?); processing it');
  // Pushed before the bridge device is open (our listener is up first): its encrypted events and
  // to-device messages need the device, so it waits for it rather than being handled without crypto.
  await untilCryptoOpen(s);
  if (s.session.stopping) throw new Error('stopping: the transaction will be sent again');
  // Room keys (MSC2409 to-device) and key counts first, durable before the events they decrypt and the 200.
  await onTransactionCrypto(s, body);
  const events = Array.isArray(body['events']) ? body['events'] : [];
  for (const ev of events) {
    if (s.session.stopping) throw new Error('stopping: the transaction will be sent again');
    await s.inbound.handleEvent(ev);
  }
  // Stable key (spec v1.13) or the MSC2409 one; a homeserver sending both sends the same EDUs twice.
  const stable = body['ephemeral'];
  const ephemeral = Array.isArray(stable) ? stable : body['de.sorunome.msc2409.ephemeral'];
  for (const edu of Array.isArray(ephemeral) ? ephemeral : []) {
    if (s.session.stopping) throw new Error('stopping: the transaction will be sent again');
    if (!isObject(edu) || edu['type'] !== 'm.receipt' || typeof edu['room_id'] !== 'string') continue;
    await s.inbound.handleReceipts(edu['room_id'], edu['content']);
  }
  await s.store.complete(txnId, hash);
  if (Date.now() - s.txns.lastPrune > TXN_PRUNE_EVERY_MS) {
    s.txns.lastPrune = Date.now();
    s.store.prune().then(
      (removed) => s.log.debug({ removed }, 'expired transaction records removed'),
      (err: unknown) => s.log.warn({ err }, 'expired transaction records not removed'),
    );
  }
}
