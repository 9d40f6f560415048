/**
 * The one error-code table. Every error a client or an operator can see has a
 * stable code, an HTTP status and a message here. Codes are never reused: a
 * retired code stays in the table with `retired: true`.
 *
 * README.md documents every code (test/unit/errors.test.ts checks it).
 */
export const ERROR_TABLE = {
  // --- events and the log
  SG_ERR_EVENT_INVALID: { status: 400, message: 'The event does not match the event schema' },
  SG_ERR_CURSOR_INVALID: { status: 400, message: 'The cursor is not a valid syncgate cursor for this log' },
  SG_ERR_ROOM_UNKNOWN: { status: 404, message: 'No such room' },
  SG_ERR_ROOM_INVALID: { status: 400, message: 'The room id or room definition is not valid' },
  SG_ERR_ROOM_ENCRYPTED: { status: 400, message: 'A linked native room is end-to-end encrypted, which this adapter cannot bridge (its crypto is not configured)' },
  SG_ERR_ROOM_NOT_ENCRYPTED: { status: 400, message: 'A linked native room is not end-to-end encrypted and the adapter bridges encrypted rooms only (Matrix encryption.mode: required)' },
  SG_ERR_EVENT_UNKNOWN: { status: 404, message: 'No such event in this room' },
  SG_ERR_LOG_UNAVAILABLE: { status: 503, message: 'The event log is not reachable' },
  SG_ERR_LOG_CLOSED: { status: 503, message: 'The event log is shutting down' },
  SG_ERR_LOG_PARTITION_UNAVAILABLE: { status: 503, message: "A partition of the event log is not reachable (no master serves its Redis Cluster slot now: a failover under way, or a shard lost); rooms in other partitions keep working" },
  SG_ERR_LOG_NOT_REPLICATED: { status: 503, message: 'The event was not confirmed on enough Redis replicas in time (redis.waitReplicas); retry with the same idempotency key' },
  SG_ERR_STATE_SEALED_KEY: { status: 500, message: 'Encrypted state does not open with the configured secret (another secret, or the stored value was altered)' },
  SG_ERR_CRYPTO_STORE_LOST: { status: 500, message: 'An adapter\'s end-to-end-encryption store is lost while the server still has its device\'s keys: a new device was created (or, when none can be, encrypted rooms are refused)' },
  SG_ERR_STATE_FENCED: { status: 409, message: 'A state write was refused: the adapter\'s connection lease was taken over by another replica since this writer got it (fencing)' },
  SG_ERR_PARAM_INVALID: { status: 400, message: 'A parameter is out of range' },
  SG_ERR_RELATION_INVALID: { status: 400, message: 'The related event cannot be the target of this relation' },

  // --- configuration and process
  SG_ERR_CONFIG_INVALID: { status: 500, message: 'The configuration is not valid' },
  SG_ERR_PARTITIONS_LOWERED: { status: 409, message: 'The configured partition count is lower than the log\'s: the count can only be raised' },
  SG_ERR_LOG_FORMAT_LOWERED: { status: 409, message: 'The write format asked for is lower than the log\'s: the format can only be raised' },
  SG_ERR_LOG_TOO_NEW: { status: 500, message: 'The log was created or raised by a newer syncgate (a key layout, key group count or write format this build does not know)' },
  SG_ERR_PARTITIONS_MISMATCH: { status: 500, message: 'The log\'s rooms are not where any partition count puts them' },
  SG_ERR_CONFIG_FILE: { status: 500, message: 'The configuration file cannot be read or parsed' },
  SG_ERR_CLI_USAGE: { status: 400, message: 'The command line is not valid' },
  SG_ERR_HTTP_LISTEN: { status: 500, message: 'The HTTP API cannot listen on its address' },
  SG_ERR_GATEWAY_UNREACHABLE: { status: 502, message: 'The CLI cannot reach the running gateway' },
  SG_ERR_GATEWAY_REFUSED: { status: 502, message: 'The running gateway refused the CLI request' },

  // --- HTTP API
  SG_ERR_AUTH_MISSING: { status: 401, message: 'A bearer token is required' },
  SG_ERR_AUTH_INVALID: { status: 401, message: 'The bearer token is not valid' },
  SG_ERR_FORBIDDEN: { status: 403, message: 'This token may not do that' },
  SG_ERR_NOT_FOUND: { status: 404, message: 'Not found' },
  SG_ERR_MEDIA_UNAVAILABLE: { status: 502, message: 'The file cannot be fetched from its origin now, or it is not the file its event names' },
  SG_ERR_REQUEST_INVALID: { status: 400, message: 'The request does not match its schema' },
  SG_ERR_BODY_TOO_LARGE: { status: 413, message: 'The request body is too large' },
  SG_ERR_MEDIA_TYPE_UNSUPPORTED: { status: 415, message: 'The request body has a content type this API does not take; send application/json' },
  SG_ERR_TEXT_INVALID: { status: 400, message: 'A text in the request is not well-formed Unicode (invalid UTF-8 or a lone surrogate)' },
  SG_ERR_HEADERS_TOO_LARGE: { status: 431, message: 'The request line and headers are too large' },
  SG_ERR_REQUEST_TIMEOUT: { status: 408, message: 'The request did not arrive in time' },
  SG_ERR_RATE_LIMITED: { status: 429, message: 'Too many requests; retry after the given delay' },
  SG_ERR_CONFLICT: { status: 409, message: 'The resource already exists or changed concurrently' },
  SG_ERR_USER_UNKNOWN: { status: 404, message: 'No such user' },
  SG_ERR_STREAM_SLOW: { status: 503, message: 'The client did not keep up with the stream; resume from `next`' },
  SG_ERR_STREAM_RESET: { status: 409, message: 'Access changed; reconnect from `next`' },
  /** retired: /readyz is the log's alone; adapter state is in GET /v1/admin/status */
  SG_ERR_NOT_READY: { status: 503, message: 'A dependency of this replica is not ready', retired: true },
  SG_ERR_INTERNAL: { status: 500, message: 'Internal error' },
} as const satisfies Record<string, ErrorSpec>;

export interface ErrorSpec {
  readonly status: number;
  readonly message: string;
  readonly retired?: boolean;
}

export type ErrorCode = keyof typeof ERROR_TABLE;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_TABLE, code);
}

/**
 * The base of every error syncgate raises on purpose. Match on `code` or on
 * the class, never on the message text.
 */
export class SyncgateError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, detail?: string, details?: Record<string, unknown>, options?: ErrorOptions) {
    const spec = ERROR_TABLE[code];
    super(detail ? `${spec.message}: ${detail}` : spec.message, options);
    this.name = 'SyncgateError';
    this.code = code;
    this.status = spec.status;
    this.details = details ? Object.freeze({ ...details }) : undefined;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Readonly<Record<string, unknown>> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isSyncgateError(err: unknown, code?: ErrorCode): err is SyncgateError {
  return err instanceof SyncgateError && (code === undefined || err.code === code);
}
