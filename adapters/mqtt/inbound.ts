/**
 * Inbound, first step after the connection (client.ts hands every PUBLISH to
 * onMessage): the window of message handling in flight, and what a failure
 * in handling one message means for its acknowledgement. What the message
 * is, and so who handles it, is decided by handlers/index.ts.
 *
 * Appends are issued in arrival order (one connection to the log then keeps
 * that order), so several can be in flight while the PUBACKs still go out
 * in order (client.ts). A message whose handling must look something up
 * before it can append (a redelivery, one carrying sg-eid, a command
 * response) is a barrier: it waits for everything before it, and everything
 * after it waits for it. QoS 0 messages owe no ack: the connection goes on
 * at once, up to `qos0InFlight` of them in flight.
 */
import { dispatch } from './handlers/index.js';
import { EID_PROPERTY, firstProperty, type InboundMessage } from './normalise.js';
import { isSinkFailure } from './sink.js';
import type { MqttState } from './state.js';

/** Resolves when the message may be acknowledged (QoS 1), or when there is room for more work (QoS 0); nothing when there is room now. */
export function onMessage(state: MqttState, msg: InboundMessage): Promise<void> | undefined {
  const window = state.inbound;
  state.stats.counters.received++;
  let work: Promise<void>;
  if (isBarrier(state, msg)) {
    const before = [...window.inFlight];
    window.barriers++;
    work = window.gate
      .then(() => Promise.allSettled(before))
      .then(() => handleOne(state, msg))
      .finally(() => window.barriers--);
    window.gate = work.catch(() => undefined);
  } else if (window.barriers === 0 && window.queuedOnGate === 0) {
    // Nothing queued ahead: start now. Up to its append nothing in it waits,
    // so appends are issued in the order the messages arrived.
    work = handleOne(state, msg);
  } else {
    window.queuedOnGate++;
    work = window.gate.then(() => {
      window.queuedOnGate--;
      return handleOne(state, msg);
    });
  }
  window.inFlight.add(work);
  const finished = () => {
    window.inFlight.delete(work);
    window.roomWaiters.shift()?.();
  };
  // Also handles a QoS 0 failure (handleOne has logged it): nothing to redeliver.
  work.then(finished, finished);
  if (msg.qos > 0) return work;
  // Nothing to acknowledge: do not hold the connection for the append, but bound the work in flight.
  return window.inFlight.size <= state.config.qos0InFlight ? undefined : waitForRoom(state);
}

function isBarrier(state: MqttState, msg: InboundMessage): boolean {
  if (msg.dup || firstProperty(msg.userProperties, EID_PROPERTY) !== undefined) return true;
  const ids = msg.subscriptionIds;
  if (ids === undefined) return state.commands.length > 0 && msg.correlationData !== undefined;
  return ids.some((id) => state.responseSubs.has(id));
}

/**
 * Handles one message; resolves to acknowledge it, rejects to leave it
 * unacknowledged (the broker redelivers). Not an async function: on the
 * per-message path each async layer costs a promise and a microtask turn, so
 * the dispatch's own promise is handed on with one error handler.
 */
function handleOne(state: MqttState, msg: InboundMessage): Promise<void> {
  let handling: Promise<void>;
  try {
    handling = dispatch(state, msg);
  } catch (err) {
    handling = Promise.reject(err);
  }
  return handling.then(undefined, (err: unknown) => failed(state, msg, err));
}

/** What a failure in handling `msg` means for its ack: throws to leave it unacknowledged. */
function failed(state: MqttState, msg: InboundMessage, err: unknown): void {
  // QoS 0 is at most once: nothing to redeliver.
  if (msg.qos === 0) {
    state.stats.drop('internal-error', 'could not handle a QoS 0 message; it is lost (at most once)', msg.topic, err);
    return;
  }
  if (state.lifecycle.stopping) throw err;
  // Errors from the sink are the log being unavailable: no ack, the broker redelivers.
  // Anything else is a bug on this message: count it and ack, or it would come back forever.
  if (isSinkFailure(err)) throw err;
  state.stats.drop('internal-error', 'could not handle an MQTT message; acknowledging it to avoid a redelivery loop', msg.topic, err);
}

async function waitForRoom(state: MqttState): Promise<void> {
  const window = state.inbound;
  while (window.inFlight.size > state.config.qos0InFlight) await new Promise<void>((resolve) => window.roomWaiters.push(resolve));
}
