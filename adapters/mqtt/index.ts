/**
 * The MQTT adapter (docs/protocols.md, "MQTT"; issue 5).
 *
 * In: rules (this endpoint's room links) match topics, decode and render
 * payloads, and the sink appends the event before the message is
 * acknowledged (client.ts). Appends are issued in arrival order and several
 * may be in flight; PUBACKs still go out in arrival order, each after its
 * own append. The inbound path never publishes or waits for a publication.
 *
 * Out: deliver() publishes room events to the link's out topic and room
 * messages that match a command pattern to the device; both wait for the
 * PUBACK. This runs on the delivery worker's call, never inside message
 * handling, so it cannot stall the inbound path.
 */
import { randomUUID } from 'node:crypto';
import type { Adapter, AdapterDeps, AdapterStatus, DeliveryContext, DeliveryResult, DeliveryTarget } from '../../src/core/adapter.js';
import type { DraftOf, LogEvent, Sender } from '../../src/core/event.js';
import { MqttConnection, backoffDelay, type SubscriptionSpec } from './client.js';
import { PendingCommands, type PendingCommand } from './commands.js';
import { parseMqttConfig, type MqttAdapterConfig } from './config.js';
import { MqttStats, OTHER_RULES } from './counters.js';
import { MqttConfigError, MqttPublishError, type DropReason } from './errors.js';
import { isSyncgateError, type ErrorCode } from '../../src/core/errors.js';
import { truncate } from '../../src/core/text.js';
import { asTelemetry, CONTEXT_IDS, EID_PROPERTY, firstProperty, normalise, type InboundMessage, type Normalised } from './normalise.js';
import { compileCommands, matchCommand, mayIssue, ENVELOPE_BYTES, PUBLISHED_KINDS, renderCommand, renderRoomEvent, type Command, type CommandMatch } from './render.js';
import { compileRule, compileRules, rulesFor, type Rule, type RuleSet } from './rules.js';
import { Throttle, type ThrottleSummary } from './throttle.js';
import { compileSync, ERROR_PROPERTY, grantedRooms, parseSyncRequest, SYNC_CONTENT_TYPE, syncError, syncPage, SyncRequestError, type SyncService } from './sync.js';
import { isPublishableTopic, subscriptionIdFor } from './topics.js';
import { isSinkFailure, markingFailures, sleep, track, withRetry } from './sink.js';

export { MqttAdapterConfig, parseMqttConfig } from './config.js';
export { compileRule as validateMqttRule } from './rules.js';
export { DROP_LOG_WINDOW_MS, DROP_LOGS_PER_WINDOW, MAX_RULE_STATS, OTHER_RULES, type MqttCounters } from './counters.js';

export type MqttAdapterDeps = AdapterDeps<MqttAdapterConfig>;

export interface MqttAdapter extends Adapter {
  /** Drops the connection like a crash (no DISCONNECT, nothing in progress acknowledged, no summaries). For tests and fatal errors. */
  abort(): void;
}

const GATEWAY_UID = 'mqtt:gateway';

export function createMqttAdapter(deps: MqttAdapterDeps): MqttAdapter {
  const name = deps.name;
  // the runtime binds `adapter` to deps.log already: binding it again would print the key twice
  const log = deps.log;
  const config = parseMqttConfig(deps.config);
  const { links } = deps;
  const sink = markingFailures(deps.sink);
  let commands: Command[];
  try {
    commands = compileCommands(config.commands);
  } catch (err) {
    throw new MqttConfigError([(err as Error).message]);
  }
  let sync: SyncService | undefined;
  try {
    sync = config.sync ? compileSync(config.sync) : undefined;
  } catch (err) {
    throw new MqttConfigError([(err as Error).message]);
  }
  const reader = deps.reader;
  if (sync && !reader) throw new MqttConfigError(['sync: this adapter was built without access to the log']);
  const syncSubId = sync ? subscriptionIdFor(sync.filter.plain) : undefined;
  const responseSubs = new Map<number, Command[]>();
  for (const c of commands) {
    const id = subscriptionIdFor(c.responseFilter.plain);
    responseSubs.set(id, [...(responseSubs.get(id) ?? []), c]);
  }

  const stats = new MqttStats(log);
  let ruleSet: RuleSet = compileRules([], config);
  /** between start() and the end of stop(); start() after stop() begins a new session (the lease came back) */
  let started = false;
  const lifecycle = { stopping: false };
  const retry = { config, log, stats, lifecycle };
  let unwatch: (() => void) | undefined;
  /** appends not tied to a received message (summaries, timeout notices) that stop() waits for */
  const background = new Set<Promise<unknown>>();
  const inFlightDeliveries = new Set<Promise<unknown>>();
  /** parts of a delivery already confirmed, so a retry does not repeat them (bounded: oldest forgotten first) */
  const deliveredParts = new Map<string, Set<'command' | 'out'>>();
  const MAX_DELIVERED_PARTS = 10_000;


  /** For a redelivery without sg-msgid: was the first delivery appended already? */
  async function alreadyAppended(n: Normalised): Promise<boolean> {
    for (const key of n.dupLookups) {
      if ((await withRetry(retry, () => sink.resolve(n.draft.room, key))) !== undefined) return true;
    }
    return false;
  }

  interface Suppressed {
    readonly rule: Rule;
    readonly params: Readonly<Record<string, string>>;
    readonly sender: Sender;
    readonly topic: string;
    readonly text: string;
  }

  const newThrottle = () => new Throttle<Suppressed>({ maxKeys: config.throttle.maxKeys, onSummary: (s) => postSummary(s) });
  /** per session: stop() flushes it for good */
  let throttle = newThrottle();

  function postSummary(s: ThrottleSummary<Suppressed>): void {
    const { rule, params, sender, topic, text } = s.last;
    const rendered = rule.summary.render({ count: s.count, last: text, topic, ...params });
    const body = truncate(rendered.ok ? rendered.text : `+${s.count} more`);
    const draft: DraftOf<'message'> = {
      v: 1,
      kind: 'message',
      idem: `mqtt:summary:${randomUUID()}`,
      room: rule.room,
      sender,
      origin: { proto: 'mqtt', via: name, ids: { 'mqtt.topic': topic } },
      ts: { received: Date.now() },
      content: { body },
    };
    stats.counters.summaries++;
    track(
      background,
      withRetry(retry, () => sink.ingest(draft, { contextIds: CONTEXT_IDS })).then((r) => stats.countResult(r), (err: unknown) => log.error({ err, room: rule.room, topic }, 'could not append a throttle summary')),
    );
  }

  async function processRule(msg: InboundMessage, rule: Rule, params: Readonly<Record<string, string>>, extra?: { replyTo: string }): Promise<void> {
    const result = normalise(msg, rule, params, { via: name, clientId: config.clientId, now: Date.now(), maxPayloadBytes: config.maxPayloadBytes, dupWindowMs: config.dupWindowSec * 1000 });
    if (result.ok === 'skip') {
      stats.counters.retainedSkipped++;
      return;
    }
    if (!result.ok) {
      stats.drop(result.reason, result.detail, msg.topic);
      stats.ruleDrop(rule, result.reason);
      return;
    }
    const n = result.value;
    if (n.draft.kind === 'telemetry') {
      const draft = n.draft;
      await withRetry(retry, () => sink.ingestTelemetry(draft));
      stats.counters.telemetry++;
      stats.ruleCount(rule, 'ingested');
      return;
    }
    const draft: DraftOf<'message'> = extra ? { ...n.draft, rel: { replyTo: extra.replyTo } } : n.draft;
    if (n.dupLookups.length > 0 && (await alreadyAppended(n))) {
      stats.counters.duplicate++;
      stats.ruleCount(rule, 'duplicate');
      return;
    }
    // Command responses are not throttled: each answers one command.
    const decision =
      extra || rule.options.throttleMs === 0
        ? 'post'
        : throttle.offer(`${rule.room}\u0000${msg.topic}`, rule.options.throttleMs, { rule, params, sender: draft.sender, topic: msg.topic, text: n.text });
    if (decision === 'suppress') {
      stats.counters.throttled++;
      // The reading itself is kept (telemetry) before the ack; only the chat line is folded into the summary.
      await withRetry(retry, () => sink.ingestTelemetry(asTelemetry(draft, msg.payload, msg.contentType, rule.options.decode)));
      stats.counters.telemetry++;
      stats.ruleCount(rule, 'throttled');
      return;
    }
    if (decision === 'overflow') stats.counters.throttleOverflow++;
    stats.countResult(await withRetry(retry, () => sink.ingest(draft, { aliases: n.aliases, contextIds: CONTEXT_IDS })), rule);
  }

  const responseRules = new Map<string, Rule>();
  /** A response rule: the command's response topic, decoded and rendered as configured, into the command's room. */
  function responseRule(command: Command, room: string): Rule {
    const key = `${command.name}\u0000${room}`;
    const known = responseRules.get(key);
    if (known) return known;
    const rule = compileRule(
      room,
      {
        endpoint: name,
        target: command.responseFilter.source,
        options: {
          decode: command.config.responseDecode,
          sender: command.config.sender,
          ...(command.config.responseTemplate !== undefined ? { template: command.config.responseTemplate } : {}),
        },
      },
      config,
    );
    // Bounded by commands × rooms; cleared when rules change. Its figures are the command's.
    const withId: Rule = { ...rule, id: commandRuleId(command) };
    responseRules.set(key, withId);
    return withId;
  }

  /**
   * The room of the command a response answers, or why it answers none: a
   * command is answered once, on the response topic it was sent with (so by
   * its device), and not after its timeout notice.
   */
  async function commandOfResponse(eventId: string, topic: string): Promise<{ room: string } | { drop: DropReason; detail: string }> {
    const id = eventId.slice(0, 64);
    const known = pending.answer(eventId, topic);
    switch (known.status) {
      case 'pending':
        return { room: known.command.room };
      case 'wrong-topic':
        return { drop: 'response-wrong-device', detail: `a response to command ${id} on another topic than ${known.expected}` };
      case 'answered':
        return { drop: 'response-duplicate', detail: `command ${id} was answered already` };
      case 'timed-out':
        return { drop: 'response-late', detail: `command ${id} timed out before this response` };
      case 'unknown':
        break;
    }
    // Not ours in this process (e.g. sent before a restart): find the command in a linked room and the response topic it named.
    const rooms = [...new Set(ruleSet.rules.map((r) => r.room))];
    for (const room of rooms) {
      const event = await withRetry(retry, () => sink.getEvent(room, eventId));
      if (!event) continue;
      const match = matchCommand(event, commands);
      const rendered = match ? renderCommand(event, match) : undefined;
      const expected = rendered?.ok ? rendered.publication.properties.responseTopic : undefined;
      if (expected === undefined) return { drop: 'unmatched-response', detail: `event ${id} is not a command` };
      if (expected !== topic) return { drop: 'response-wrong-device', detail: `a response to command ${id} on another topic than ${expected}` };
      pending.answered(eventId, room, topic);
      return { room };
    }
    return { drop: 'unmatched-response', detail: `no command ${id} in any linked room` };
  }

  async function processResponse(msg: InboundMessage, candidates: readonly Command[]): Promise<boolean> {
    const command = candidates.find((c) => c.responseFilter.match(msg.topic) !== undefined);
    if (!command) return false;
    const eventId = msg.correlationData?.toString('utf8');
    if (!eventId) {
      stats.drop('unmatched-response', 'a message on a response topic without correlation data', msg.topic);
      return true;
    }
    const bound = await commandOfResponse(eventId, msg.topic);
    if ('drop' in bound) {
      stats.drop(bound.drop, bound.detail, msg.topic);
      return true;
    }
    const { room } = bound;
    stats.counters.commandResponses++;
    await processRule(msg, responseRule(command, room), command.responseFilter.match(msg.topic) ?? {}, { replyTo: eventId });
    return true;
  }

  async function processMessage(msg: InboundMessage): Promise<void> {
    const ids = msg.subscriptionIds;
    if (sync && (ids === undefined || (syncSubId !== undefined && ids.includes(syncSubId)))) {
      const params = sync.filter.match(msg.topic);
      const device = params?.[sync.config.sender];
      // Served off the inbound path (it reads the log and publishes): the request is acknowledged now.
      if (device !== undefined) return enqueueSync(msg, device);
    }
    let handled = false;
    const responseCandidates = commands.length === 0 ? [] : ids === undefined ? commands : ids.flatMap((id) => responseSubs.get(id) ?? []);
    if (responseCandidates.length > 0 && (ids !== undefined || msg.correlationData !== undefined)) {
      handled = await processResponse(msg, responseCandidates);
    }
    const matches = rulesFor(ruleSet, msg.topic, ids);
    if (matches.length === 0) {
      if (!handled) stats.drop('no-rule', 'no rule matches this topic (a subscription left from an earlier configuration?)', msg.topic);
      return;
    }
    if (matches.length === 1 && matches[0]) return processRule(msg, matches[0].rule, matches[0].params);
    // All rooms' appends are issued now, in order; the message is done when all are.
    const results = await Promise.allSettled(matches.map(({ rule, params }) => processRule(msg, rule, params)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Message handling in flight. Appends are issued in arrival order (one
   * connection to the log then keeps that order), so several can be in flight
   * while the PUBACKs still go out in order (client.ts). A message whose
   * handling must look something up before it can append (a redelivery, one
   * carrying sg-eid, a command response) is a barrier: it waits for
   * everything before it, and everything after it waits for it.
   */
  const inFlight = new Set<Promise<unknown>>();
  let gate: Promise<unknown> = Promise.resolve();
  /** QoS 0 handlers waiting for room in the window (woken one per finished message) */
  const roomWaiters: Array<() => void> = [];

  function isBarrier(msg: InboundMessage): boolean {
    if (msg.dup || firstProperty(msg.userProperties, EID_PROPERTY) !== undefined) return true;
    const ids = msg.subscriptionIds;
    if (ids === undefined) return commands.length > 0 && msg.correlationData !== undefined;
    return ids.some((id) => responseSubs.has(id));
  }

  async function handleOne(msg: InboundMessage): Promise<void> {
    try {
      await processMessage(msg);
    } catch (err) {
      // QoS 0 is at most once: nothing to redeliver.
      if (msg.qos === 0) {
        stats.drop('internal-error', 'could not handle a QoS 0 message; it is lost (at most once)', msg.topic, err);
        return;
      }
      if (lifecycle.stopping) throw err;
      // Errors from the sink are the log being unavailable: no ack, the broker redelivers.
      // Anything else is a bug on this message: count it and ack, or it would come back forever.
      if (isSinkFailure(err)) throw err;
      stats.drop('internal-error', 'could not handle an MQTT message; acknowledging it to avoid a redelivery loop', msg.topic, err);
    }
  }

  /** barriers not finished yet, and messages queued behind one that have not started */
  let barriers = 0;
  let queuedOnGate = 0;

  /** Resolves when the message may be acknowledged (QoS 1), or when there is room for more work (QoS 0); nothing when there is room now. */
  function onMessage(msg: InboundMessage): Promise<void> | undefined {
    stats.counters.received++;
    let work: Promise<void>;
    if (isBarrier(msg)) {
      const before = [...inFlight];
      barriers++;
      work = gate
        .then(() => Promise.allSettled(before))
        .then(() => handleOne(msg))
        .finally(() => barriers--);
      gate = work.catch(() => undefined);
    } else if (barriers === 0 && queuedOnGate === 0) {
      // Nothing queued ahead: start now. Up to its append nothing in it waits,
      // so appends are issued in the order the messages arrived.
      work = handleOne(msg);
    } else {
      queuedOnGate++;
      work = gate.then(() => {
        queuedOnGate--;
        return handleOne(msg);
      });
    }
    inFlight.add(work);
    const finished = () => {
      inFlight.delete(work);
      roomWaiters.shift()?.();
    };
    // Also handles a QoS 0 failure (handleOne has logged it): nothing to redeliver.
    work.then(finished, finished);
    if (msg.qos > 0) return work;
    // Nothing to acknowledge: do not hold the connection for the append, but bound the work in flight.
    return inFlight.size <= config.qos0InFlight ? undefined : waitForRoom();
  }

  async function waitForRoom(): Promise<void> {
    while (inFlight.size > config.qos0InFlight) await new Promise<void>((resolve) => roomWaiters.push(resolve));
  }

  const pending = new PendingCommands({ onTimeout: (c) => postTimeout(c) });

  /** A gateway notice in reply to a command (idempotent per command and what): appended in the background, stop() waits for it. */
  function postNotice(room: string, commandEventId: string, what: 'timeout' | 'denied', body: string): void {
    const draft: DraftOf<'message'> = {
      v: 1,
      kind: 'message',
      idem: `mqtt:gateway:${what}:${commandEventId}`,
      room,
      sender: { uid: GATEWAY_UID, proto: 'mqtt', native: config.clientId, display: 'MQTT gateway', auth: 'server' },
      origin: { proto: 'mqtt', via: name, ids: {} },
      ts: { received: Date.now() },
      content: { body: truncate(body) },
      rel: { replyTo: commandEventId },
    };
    track(
      background,
      withRetry(retry, () => sink.ingest(draft)).then((r) => stats.countResult(r), (err: unknown) => log.error({ err, room }, `could not append a command ${what} notice`)),
    );
  }

  function postTimeout(c: PendingCommand): void {
    stats.counters.commandTimeouts++;
    const command = commands.find((x) => x.name === c.commandName);
    const view = { ...c.vars, seconds: String(Math.round(c.timeoutMs / 100) / 10) };
    const rendered = command?.timeoutTemplate.render(view);
    log.info({ room: c.room, command: c.commandName, eventId: c.eventId }, 'command timed out');
    postNotice(c.room, c.eventId, 'timeout', rendered?.ok ? rendered.text : `No response to the command within ${view.seconds} s`);
  }

  function postDenied(event: LogEvent, match: CommandMatch): void {
    stats.counters.commandsDenied++;
    const rendered = match.command.denyTemplate.render({ ...match.vars, sender: event.sender.display ?? event.sender.uid });
    log.info({ room: event.room, command: match.command.name, eventId: event.eventId, sender: event.sender.uid }, 'command denied');
    postNotice(event.room, event.eventId, 'denied', rendered.ok ? rendered.text : 'You may not send this command');
  }

  /** per session: a connection is not reused after its stop() */
  let connection = new MqttConnection({ config, log, onMessage });

  /** sync requests being served, and those waiting for a turn */
  const syncJobs = new Set<Promise<unknown>>();
  const syncQueue: Array<() => Promise<void>> = [];
  let syncActive = 0;

  function enqueueSync(msg: InboundMessage, device: string): void {
    stats.counters.syncRequests++;
    const limits = sync?.config;
    if (!limits || lifecycle.stopping) return;
    if (syncActive >= limits.concurrency && syncQueue.length >= limits.maxQueued) {
      track(syncJobs, replySync(msg, undefined, new SyncRequestError('SG_ERR_RATE_LIMITED', 'too many sync requests at once; retry later')));
      return;
    }
    syncQueue.push(() => serveSync(msg, device));
    runSyncQueue();
  }

  function runSyncQueue(): void {
    const limit = sync?.config.concurrency ?? 1;
    while (syncActive < limit && syncQueue.length > 0) {
      const job = syncQueue.shift() as () => Promise<void>;
      syncActive++;
      track(
        syncJobs,
        job().finally(() => {
          syncActive--;
          runSyncQueue();
        }),
      );
    }
  }

  async function serveSync(msg: InboundMessage, device: string): Promise<void> {
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
      stats.counters.syncEvents += result.events.length;
      page = syncPage(result.events, result.next, result.limited);
    } catch (err) {
      error = err;
    }
    await replySync(msg, page, error);
  }

  /** Publishes a sync answer (or the error) to the request's response topic; a request without one gets its error on `<topic>/reply`. */
  async function replySync(msg: InboundMessage, page: string | undefined, error: unknown): Promise<void> {
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
      await connection.publish({
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

  function wantedSubscriptions(): Map<string, SubscriptionSpec> {
    const wanted = new Map<string, SubscriptionSpec>();
    for (const s of ruleSet.subscriptions.values()) wanted.set(s.filter, s);
    if (sync && syncSubId !== undefined) wanted.set(sync.filter.plain, { filter: sync.filter.plain, id: syncSubId, rh: 2 });
    for (const c of commands) {
      const filter = c.responseFilter.plain;
      if (!wanted.has(filter)) wanted.set(filter, { filter, id: subscriptionIdFor(filter), rh: 2 });
    }
    return wanted;
  }

  function reloadRules(): void {
    const next = compileRules(links.linksOf(name), config);
    responseRules.clear();
    for (const bad of next.invalid) {
      if (!ruleSet.invalid.some((b) => b.room === bad.room && b.target === bad.target)) {
        log.error({ room: bad.room, target: bad.target, problems: bad.problems }, 'MQTT rule ignored: the room link is not valid');
      }
    }
    ruleSet = next;
    // A removed rule's series go with it.
    const current = new Set([...next.rules.map((r) => r.id), ...commands.map(commandRuleId), OTHER_RULES]);
    stats.keepRules(current);
    if (started) {
      connection.setSubscriptions(wantedSubscriptions()).catch((err: unknown) => log.error({ err }, 'could not update MQTT subscriptions'));
    }
  }

  /** The rule of a delivery target: from the current set, or compiled from the link (the view may lag behind). */
  function ruleOf(target: DeliveryTarget): Rule | undefined {
    const known = ruleSet.rules.find((r) => r.room === target.room && r.link.target === target.link.target);
    if (known) return known;
    try {
      return compileRule(target.room, target.link, config);
    } catch {
      return undefined;
    }
  }

  function failure(err: unknown, attempt: number): DeliveryResult {
    stats.counters.publishFailed++;
    if (err instanceof MqttPublishError && err.permanent) return { status: 'rejected', reason: err.message };
    return { status: 'retry', reason: (err as Error).message, afterMs: backoffDelay(attempt, config.reconnect.minMs, config.reconnect.maxMs) };
  }

  async function deliverEvent(event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
    if (!PUBLISHED_KINDS.has(event.kind)) return { status: 'skipped', reason: `${event.kind} events are not published to MQTT` };
    const rule = ruleOf(target);
    if (!rule) return { status: 'rejected', reason: `the link ${target.link.target} is not a valid MQTT rule` };
    // Events from this endpoint (device messages, replies, gateway notices) only go to the out topic of links that mirror them.
    const own = event.origin.via === name;
    if (own && !(rule.options.out && rule.options.outOwn)) return { status: 'skipped', reason: 'came from this endpoint' };
    const roomRules = ruleSet.rules.filter((r) => r.room === target.room);
    const partsKey = `${event.eventId}\u0000${target.link.target}`;
    const done = deliveredParts.get(partsKey) ?? new Set<'command' | 'out'>();
    let sent = done.size > 0;

    // A room with several MQTT links gets each command once, from its first link.
    const firstLink = (roomRules[0] ?? rule).link.target === rule.link.target;
    const match = !own && rule.options.commands && firstLink ? matchCommand(event, commands) : undefined;
    if (match && !done.has('command') && !mayIssue(match.command, event.sender, config.roles)) {
      // Not this sender's to give: answered in the room, never sent (the message itself still goes out).
      postDenied(event, match);
    } else if (match && !done.has('command')) {
      const rendered = renderCommand(event, match);
      if (!rendered.ok) {
        stats.counters.commandsRefused++;
        log.warn({ room: event.room, eventId: event.eventId, reason: rendered.reason }, 'command not sent');
      } else {
        try {
          await connection.publish(rendered.publication);
        } catch (err) {
          return failure(err, context.attempt);
        }
        stats.counters.published++;
        stats.counters.commandsSent++;
        sent = true;
        done.add('command');
        deliveredParts.set(partsKey, done);
        if (deliveredParts.size > MAX_DELIVERED_PARTS) deliveredParts.delete(deliveredParts.keys().next().value ?? partsKey);
        pending.add({
          eventId: event.eventId,
          room: event.room,
          commandName: match.command.name,
          responseTopic: rendered.publication.properties.responseTopic ?? '',
          vars: match.vars,
          timeoutMs: match.command.config.timeoutMs,
        });
      }
    }

    if (rule.options.out && !done.has('out')) {
      const rendered = renderRoomEvent(event, rule.outTopic, context.content, { qos: rule.options.outQos, retain: rule.options.outRetain, maxPayloadBytes: config.maxPayloadBytes });
      if (!rendered.ok) return { status: 'rejected', reason: rendered.reason };
      // Several links of one room with the same out topic publish once (from the first of them).
      const earlier = roomRules.slice(0, Math.max(0, roomRules.indexOf(rule))).some((r) => {
        if (!r.options.out || (own && !r.options.outOwn)) return false;
        const t = renderRoomEvent(event, r.outTopic);
        return t.ok && t.publication.topic === rendered.publication.topic;
      });
      if (!earlier) {
        try {
          await connection.publish(rendered.publication);
        } catch (err) {
          return failure(err, context.attempt);
        }
        stats.counters.published++;
        sent = true;
      }
    }
    deliveredParts.delete(partsKey);
    return sent ? { status: 'delivered', nativeIds: {} } : { status: 'skipped', reason: 'nothing to publish from this link (out disabled, or published from another link of the room)' };
  }

  return {
    name,
    protocol: 'mqtt',
    // Devices get plain text in `content` (the delivery engine converts rich text).
    textFormat: 'plain',
    // Publications stay within the payload size the adapter accepts (README "Message size").
    maxBodyBytes: Math.max(0, config.maxPayloadBytes - ENVELOPE_BYTES),

    async start() {
      if (started) return;
      started = true;
      if (lifecycle.stopping) {
        // Started again after a stop (this replica won the connection lease back): a new session.
        lifecycle.stopping = false;
        connection = new MqttConnection({ config, log, onMessage });
        throttle = newThrottle();
      }
      reloadRules();
      unwatch = links.onChange(() => reloadRules());
      // Subscriptions are sent on every CONNACK (client.ts); set them before connecting.
      void connection.setSubscriptions(wantedSubscriptions());
      await connection.start();
    },

    async stop() {
      if (!started || lifecycle.stopping) return;
      lifecycle.stopping = true;
      unwatch?.();
      const deadline = (ms: number) => sleep(ms);
      // Finish sends in flight, then message handling (its acks), then disconnect.
      syncQueue.length = 0;
      await Promise.race([Promise.allSettled([...inFlightDeliveries, ...syncJobs]), deadline(config.publishTimeoutMs)]);
      await connection.stop();
      await Promise.race([Promise.allSettled([...inFlight]), deadline(5_000)]);
      // Pending summaries are posted now rather than lost.
      throttle.flush();
      pending.close();
      await Promise.race([Promise.allSettled([...background]), deadline(5_000)]);
      started = false;
    },

    abort() {
      lifecycle.stopping = true;
      started = false;
      unwatch?.();
      connection.abort();
      pending.close();
      // A crash loses the pending summaries; the suppressed readings are in the telemetry stream.
      throttle.cancel();
    },

    status(): AdapterStatus {
      const c = connection.status();
      return {
        connected: c.connected,
        ready: c.connected && c.subscribed && !lifecycle.stopping,
        ruleStats: stats.ruleSeries(),
        detail: {
          clientId: config.clientId,
          sessionPresent: c.sessionPresent,
          connects: c.connects,
          lastError: c.lastError,
          subscriptionErrors: c.subscriptionErrors,
          rules: ruleSet.rules.length,
          invalidRules: ruleSet.invalid,
          subscriptions: c.granted,
          pendingCommands: pending.size,
          throttledTopics: throttle.size,
          counters: { ...stats.counters },
          dropped: { ...stats.dropped },
        },
      };
    },

    deliversOwn(link) {
      const o = link.options;
      const on = (key: string, fallback: boolean) => (o?.[key] === undefined ? fallback : o[key] === true || o[key] === 'true');
      return on('out', true) && on('outOwn', false);
    },

    deliver(event, target, context) {
      if (lifecycle.stopping) return Promise.resolve({ status: 'retry', reason: 'the MQTT adapter is stopping', afterMs: 1000 });
      return track(inFlightDeliveries, deliverEvent(event, target, context));
    },
  };
}

function commandRuleId(command: Command): string {
  return `command:${command.name}`;
}

