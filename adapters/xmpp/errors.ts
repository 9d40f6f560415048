/**
 * Adapter-internal errors, translated at the edge: delivery failures become
 * DeliveryResult statuses, input problems counted drop reasons, and
 * configuration problems are reported all at once.
 */

/** Why an inbound stanza did not become an event; each is counted in status() and logged (rate-limited). */
import { AdapterConfigError } from '../../src/core/adapter.js';
export const DROP_REASONS = [
  /** a carbon not from our own bare JID (XEP-0280 §11) */
  'spoofed-carbon',
  /** an archive result not from our account or the queried room, or for a query we did not make */
  'archive-stranger',
  /** a conversation no room links to */
  'no-room',
  /** an edit, retraction, reaction, reply target or marker whose target is not in the log */
  'unknown-target',
  /** an edit or retraction by someone else than the sender of its target */
  'not-original-sender',
  'body-too-large',
  /** text with characters XML 1.0 does not allow */
  'invalid-characters',
  /** a message that carries something we cannot use (bad attributes, empty reaction id …) */
  'invalid-stanza',
  /** refused by the sink (does not match the event schema, room gone) */
  'invalid-event',
  'internal-error',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** The adapter configuration or a room link is not valid; lists every problem found. */
export class XmppConfigError extends AdapterConfigError {
  constructor(problems: readonly string[]) {
    super('XMPP', problems);
    this.name = 'XmppConfigError';
  }
}

/** The connection is not usable right now (offline, stopping): retry later. */
export class XmppNotConnectedError extends Error {
  constructor(message = 'not connected to the XMPP server') {
    super(message);
    this.name = 'XmppNotConnectedError';
  }
}

/** An XMPP error reply (`<error><condition/></error>`), by condition. */
export class XmppStanzaError extends Error {
  readonly condition: string;
  readonly errorType: string | undefined;

  constructor(condition: string, errorType?: string, text?: string) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'XmppStanzaError';
    this.condition = condition;
    this.errorType = errorType;
  }
}

/** The condition of an error thrown by @xmpp/client's iq caller (StanzaError) or ours; undefined for other errors (timeouts, socket). */
export function stanzaErrorCondition(err: unknown): string | undefined {
  if (err instanceof XmppStanzaError) return err.condition;
  if (typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'StanzaError') {
    const condition = (err as { condition?: unknown }).condition;
    return typeof condition === 'string' ? condition : undefined;
  }
  return undefined;
}
