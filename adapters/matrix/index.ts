/**
 * The Matrix adapter (docs/protocols.md, "Matrix"): application-service mode
 * (ghost users, pushed transactions) or bot mode (one relay account, /sync).
 *
 * In: transactions (appservice.ts → transactions.ts) or /sync batches
 * (sync.ts) → inbound/dispatch.ts → one handler per event kind → the sink;
 * acknowledged (200 / new sync token) only after the append.
 * Out: deliver() (outbound/deliver.ts) renders (render.ts) and sends with PUT
 * /rooms/{room}/send/{type}/{txnId = our event id}, so the homeserver
 * treats a retried delivery as a retransmission; a 429 answers `retry` with
 * the wait the homeserver asked for, so the delivery engine keeps order.
 *
 * Native ids: `mx.eventId` for the Matrix event an event became (reactions:
 * also `mx.annotation.<key>` per annotation sent). Relations arrive as the
 * targets' native ids in context.references.
 *
 * README.md in this folder lists the files in the order a message passes them.
 */
export { createMatrixAdapter } from './adapter.js';
export type { MatrixAdapter, MatrixAdapterDeps } from './state.js';
export { parseMatrixConfig, registrationYaml, randomToken, MatrixAdapterConfig } from './config.js';
export { memoryMatrixState, type MatrixState, type TxnStore } from './store.js';
// The adapter type's descriptor (config, secrets, links, CLI): the one entry in src/runtime's adapter list.
import { createMatrixAdapter as createForDescriptor } from './adapter.js';
import { describeMatrixAdapter } from './descriptor.js';
export const matrixAdapter = describeMatrixAdapter(createForDescriptor);
