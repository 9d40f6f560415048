/**
 * Adapter-internal errors, translated at the edge: homeserver answers become
 * DeliveryResult statuses, input problems become counted drop reasons, and
 * configuration problems are reported all at once.
 */
import { AdapterConfigError } from '../../src/core/adapter.js';
import type { DeliveryResult } from '../../src/core/adapter.js';

/** Why an inbound Matrix event (or transaction) did not become a log event; each is counted in status() and logged. */
export const DROP_REASONS = [
  'malformed-event',
  'malformed-transaction',
  'unlinked-room',
  'unsupported-type',
  'unsupported-msgtype',
  'encrypted',
  'unencrypted-room',
  'redacted',
  'own-event',
  'unknown-target',
  'edit-sender-mismatch',
  'invalid-edit',
  'invalid-reaction',
  'duplicate-annotation',
  'unsupported-redaction',
  'body-truncated',
  'html-sanitised',
  'invalid-event',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** The adapter configuration is not valid; lists every problem found. */
export class MatrixConfigError extends AdapterConfigError {
  constructor(problems: readonly string[]) {
    super('Matrix', problems);
    this.name = 'MatrixConfigError';
  }
}

/** The homeserver answered with a Matrix error (standard error response). */
export class MatrixApiError extends Error {
  readonly status: number;
  readonly errcode: string;
  /** from the Retry-After header or `retry_after_ms`, whichever asks for longer */
  readonly retryAfterMs: number | undefined;

  /** the answer's body (a user-interactive-auth 401 carries its flows and session there) */
  readonly body: Readonly<Record<string, unknown>>;

  constructor(status: number, errcode: string, message: string, retryAfterMs?: number, body: Readonly<Record<string, unknown>> = {}) {
    super(`${status} ${errcode}: ${message}`);
    this.name = 'MatrixApiError';
    this.status = status;
    this.errcode = errcode;
    this.retryAfterMs = retryAfterMs;
    this.body = body;
  }

  get rateLimited(): boolean {
    return this.status === 429 || this.errcode === 'M_LIMIT_EXCEEDED';
  }
}

/** No answer: connection refused, reset, timed out. Always transient. */
export class MatrixNetworkError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'MatrixNetworkError';
  }
}

/** The sending user is not (and could not be made) a member of the room: retried, an operator may invite the bot. */
export class MatrixNotJoinedError extends Error {
  constructor(roomId: string, userId: string, options?: ErrorOptions) {
    super(`${userId} is not in ${roomId} and could not join (invite the bridge bot)`, options);
    this.name = 'MatrixNotJoinedError';
  }
}

/** The room is end-to-end encrypted and our crypto is not active: nothing may be sent in clear (retried: it may become active). */
export class MatrixEncryptedRoomError extends Error {
  constructor(roomId: string, why: string) {
    super(`Matrix room ${roomId} is end-to-end encrypted and cannot be sent to in clear: ${why}`);
    this.name = 'MatrixEncryptedRoomError';
  }
}

export function isMatrixApiError(err: unknown, errcode?: string): err is MatrixApiError {
  return err instanceof MatrixApiError && (errcode === undefined || err.errcode === errcode);
}

/** Without a Retry-After, a 429 waits this long before the next try. */
export const DEFAULT_RATE_LIMIT_WAIT_MS = 1_000;

/** How a failed request ends a delivery: retry what can succeed later, reject what cannot. */
export function deliveryFailure(err: unknown): DeliveryResult {
  if (err instanceof MatrixApiError) {
    if (err.rateLimited) return { status: 'retry', reason: `rate limited: ${err.message}`, afterMs: err.retryAfterMs ?? DEFAULT_RATE_LIMIT_WAIT_MS };
    // 401: a token problem an operator fixes; 5xx and 408: the server's trouble. Both may pass.
    if (err.status >= 500 || err.status === 401 || err.status === 408) return { status: 'retry', reason: err.message };
    return { status: 'rejected', reason: err.message };
  }
  if (err instanceof MatrixNetworkError || err instanceof MatrixNotJoinedError) return { status: 'retry', reason: err.message };
  return { status: 'retry', reason: err instanceof Error ? err.message : String(err) };
}
