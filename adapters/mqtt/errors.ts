/**
 * Adapter-internal errors, translated at the edge: delivery failures become
 * DeliveryResult statuses, input problems become counted drop reasons, and
 * configuration problems are reported all at once.
 */

/** Why an inbound MQTT message did not become an event; each is counted in status() and logged. */
import { AdapterConfigError } from '../../src/core/adapter.js';
export const DROP_REASONS = [
  'no-rule',
  'payload-too-large',
  'invalid-json',
  'json-too-deep',
  'invalid-utf8',
  'template-missing-field',
  /** the template rendered nothing but whitespace: filtered out by its sections, nothing posted */
  'template-empty',
  'template-failed',
  'topic-too-long',
  'invalid-sender',
  'invalid-msgid',
  'invalid-event',
  'unmatched-response',
  /** a response with a pending command's correlation data on another response topic (another device) */
  'response-wrong-device',
  /** a second response to a command already answered */
  'response-duplicate',
  /** a response after the command's timeout notice */
  'response-late',
  /** a sync answer could not be published (no usable response topic, or the publish failed) */
  'sync-no-reply',
  'internal-error',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** The adapter configuration or a room link (rule) is not valid; lists every problem found. */
export class MqttConfigError extends AdapterConfigError {
  constructor(problems: readonly string[]) {
    super('MQTT', problems);
    this.name = 'MqttConfigError';
  }
}

/** A publish was not confirmed. `permanent`: retrying cannot help (not authorised, bad topic …). */
export class MqttPublishError extends Error {
  readonly permanent: boolean;
  readonly reasonCode: number | undefined;

  constructor(message: string, options: { permanent: boolean; reasonCode?: number; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MqttPublishError';
    this.permanent = options.permanent;
    this.reasonCode = options.reasonCode;
  }
}

/**
 * PUBACK reason codes after which a retry of the same publish is pointless
 * (MQTT 5 §3.4.2.1). Not 0x87 (not authorized): that is the broker's ACL,
 * which an operator fixes and reloads without a restart, so the publish is
 * retried (`delivery.maxAttempts`) before it is dead-lettered.
 */
const PERMANENT_PUBACK_CODES = new Set([
  0x90, // topic name invalid
  0x95, // packet too large
  0x99, // payload format invalid
]);

export function isPermanentPubackCode(code: number): boolean {
  return PERMANENT_PUBACK_CODES.has(code);
}
