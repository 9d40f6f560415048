/**
 * Catch-up over MQTT: sync requests (handlers/sync-request.ts) are served
 * `sync.concurrency` at a time, at most `sync.maxQueued` waiting; each
 * answer is a page of the rooms granted to the device, read through the
 * adapter's TimelineReader from the request's cursor, published to the
 * request's response topic with its correlation data. The pure parts
 * (request parsing, grants, page format) are in sync.ts.
 */
import { isSyncgateError, type ErrorCode } from '../../src/core/errors.js';
import type { InboundMessage } from './normalise.js';
import { track } from './sink.js';
import type { MqttState } from './state.js';
import { ERROR_PROPERTY, grantedRooms, parseSyncRequest, SYNC_CONTENT_TYPE, syncError, syncPage, SyncRequestError } from './sync.js';
import { isPublishableTopic } from './topics.js';

/** Queues a sync request, or answers it with SG_ERR_RATE_LIMITED when the queue is full. */
export function enqueueSync(state: MqttState, msg: InboundMessage, device: string): void {
  const queue = state.catchup;
  state.stats.counters.syncRequests++;
  const limits = state.sync?.config;
  if (!limits || state.lifecycle.stopping) return;
  if (queue.active >= limits.concurrency && queue.waiting.length >= limits.maxQueued) {
    track(queue.jobs, replySync(state, msg, undefined, new SyncRequestError('SG_ERR_RATE_LIMITED', 'too many sync requests at once; retry later')));
    return;
  }
  queue.waiting.push(() => serveSync(state, msg, device));
  runSyncQueue(state);
}

/** Drops the requests still waiting (stop()); those being served finish. */
export function clearSyncQueue(state: MqttState): void {
  state.catchup.waiting.length = 0;
}

function runSyncQueue(state: MqttState): void {
  const queue = state.catchup;
  const limit = state.sync?.config.concurrency ?? 1;
  while (queue.active < limit && queue.waiting.length > 0) {
    const job = queue.waiting.shift() as () => Promise<void>;
    queue.active++;
    track(
      queue.jobs,
      job().finally(() => {
        queue.active--;
        runSyncQueue(state);
      }),
    );
  }
}

async function serveSync(state: MqttState, msg: InboundMessage, device: string): Promise<void> {
  const { sync, reader } = state;
  if (!sync || !reader) return;
  let page: string | undefined;
  let error: unknown;
  try {
    if (msg.responseTopic === undefined) throw new SyncRequestError('SG_ERR_REQUEST_INVALID', 'a sync request needs an MQTT 5 Response Topic (and Correlation Data)');
    const request = parseSyncRequest(msg.payload, sync);
    const granted = grantedRooms(sync, device);
    if (granted.size === 0) throw new SyncRequestError('SG_ERR_FORBIDDEN', `no room is granted to ${device.slice(0, 64)}`);
    for (const room of request.rooms ?? []) {
      // Not granted and not existing look the same to a device.
      if (!granted.has(room)) throw new SyncRequestError('SG_ERR_ROOM_UNKNOWN', `no room ${room.slice(0, 64)} for this device`);
    }
    const rooms = request.rooms ? new Set(request.rooms) : granted;
    const result = request.since === undefined ? await reader.latest({ rooms, limit: request.limit }) : await reader.read(request.since, { rooms, limit: request.limit });
    state.stats.counters.syncEvents += result.events.length;
    page = syncPage(result.events, result.next, result.limited);
  } catch (err) {
    error = err;
  }
  await replySync(state, msg, page, error);
}

/** Publishes a sync answer (or the error) to the request's response topic; a request without one gets its error on `<topic>/reply`. */
async function replySync(state: MqttState, msg: InboundMessage, page: string | undefined, error: unknown): Promise<void> {
  const { stats, log } = state;
  let payload = page;
  // Never empty: mqtt.js does not send a PUBLISH with an empty user property map (and never settles it).
  const userProperties: Record<string, string> = { 'sg-kind': 'sync' };
  if (payload === undefined) {
    stats.counters.syncErrors++;
    const code: ErrorCode = error instanceof SyncRequestError ? error.code : isSyncgateError(error) ? error.code : 'SG_ERR_INTERNAL';
    if (code === 'SG_ERR_INTERNAL' || code === 'SG_ERR_LOG_UNAVAILABLE') log.error({ err: error, topic: msg.topic }, 'could not serve a sync request');
    const message = error instanceof Error && code !== 'SG_ERR_INTERNAL' ? error.message : 'internal error';
    payload = syncError(code, message);
    userProperties[ERROR_PROPERTY] = code;
    userProperties['sg-kind'] = 'sync-error';
  }
  const topic = msg.responseTopic ?? `${msg.topic}/reply`;
  if (!isPublishableTopic(topic)) {
    stats.drop('sync-no-reply', `cannot answer on "${topic.slice(0, 128)}"`, msg.topic);
    return;
  }
  try {
    await state.session.connection.publish({
      topic,
      payload,
      properties: {
        contentType: SYNC_CONTENT_TYPE,
        payloadFormatIndicator: true,
        userProperties,
        ...(msg.correlationData !== undefined ? { correlationData: msg.correlationData } : {}),
      },
    });
    stats.counters.published++;
  } catch (err) {
    stats.counters.publishFailed++;
    stats.drop('sync-no-reply', `could not publish the sync answer: ${(err as Error).message}`, msg.topic);
  }
}
