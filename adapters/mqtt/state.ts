/**
 * Everything the MQTT adapter holds between calls, in one typed object.
 * createMqttAdapter (index.ts) makes it once; every module of the adapter is
 * handed it and keeps nothing of its own, so what a function reads and
 * changes is in its parameters. The comment of each part names the module that
 * manages it; the figures (`stats`) are counted by every module.
 */
import type { Logger } from 'pino';
import type { AdapterDeps, IngestSink, LinkView, TimelineReader } from '../../src/core/adapter.js';
import type { Sender } from '../../src/core/event.js';
import { MqttConnection } from './client.js';
import { PendingCommands, type PendingCommand } from './commands.js';
import { parseMqttConfig, type MqttAdapterConfig } from './config.js';
import { MqttStats } from './counters.js';
import { MqttConfigError } from './errors.js';
import type { InboundMessage } from './normalise.js';
import { compileCommands, type Command } from './render.js';
import { compileRules, type Rule, type RuleSet } from './rules.js';
import { markingFailures } from './sink.js';
import { compileSync, type SyncService } from './sync.js';
import { Throttle, type ThrottleSummary } from './throttle.js';
import { subscriptionIdFor } from './topics.js';

/** What a throttle summary needs of the last message it folded in. */
export interface Suppressed {
  readonly rule: Rule;
  readonly params: Readonly<Record<string, string>>;
  readonly sender: Sender;
  readonly topic: string;
  readonly text: string;
}

/** The handlers of the callbacks the state's parts make (wired by index.ts, so this module imports none of them). */
export interface Wiring {
  /** a PUBLISH from the connection (inbound.ts) */
  readonly onMessage: (state: MqttState, msg: InboundMessage) => Promise<void> | undefined;
  /** a throttle window closed with messages in it (ingest.ts) */
  readonly onSummary: (state: MqttState, summary: ThrottleSummary<Suppressed>) => void;
  /** a command got no response in time (notices.ts) */
  readonly onTimeout: (state: MqttState, command: PendingCommand) => void;
}

/** One session's parts: start() after stop() gets new ones (session.ts). */
export interface Session {
  /** a connection is not reused after its stop() */
  readonly connection: MqttConnection;
  /** stop() flushes it for good */
  readonly throttle: Throttle<Suppressed>;
}

/** session.ts */
export interface Lifecycle {
  /** between start() and the end of stop(); start() after stop() begins a new session (the lease came back) */
  started: boolean;
  stopping: boolean;
  /** stops following link changes */
  unwatch: (() => void) | undefined;
}

/** session.ts compiles the rules; handlers/command-response.ts keeps the response rules. */
export interface RulesState {
  current: RuleSet;
  /** response rules by command and room: bounded by commands × rooms, cleared when the rules change */
  readonly responses: Map<string, Rule>;
}

/**
 * Message handling in flight (inbound.ts). Appends are issued in arrival
 * order, so several can be in flight while the PUBACKs still go out in order
 * (client.ts). A barrier waits for everything before it, and everything
 * after it waits for it.
 */
export interface InboundWindow {
  readonly inFlight: Set<Promise<unknown>>;
  gate: Promise<unknown>;
  /** QoS 0 handlers waiting for room in the window (woken one per finished message) */
  readonly roomWaiters: Array<() => void>;
  /** barriers not finished yet */
  barriers: number;
  /** messages queued behind a barrier that have not started */
  queuedOnGate: number;
}

/** Sync requests being served, and those waiting for a turn (catchup.ts). */
export interface CatchupQueue {
  readonly jobs: Set<Promise<unknown>>;
  readonly waiting: Array<() => Promise<void>>;
  active: number;
}

/** deliver.ts */
export interface OutboundState {
  readonly inFlight: Set<Promise<unknown>>;
  /** parts of a delivery already confirmed, so a retry does not repeat them (bounded: oldest forgotten first) */
  readonly deliveredParts: Map<string, Set<'command' | 'out'>>;
}

export interface MqttState {
  /** the endpoint name, `origin.via` of what this adapter ingests */
  readonly name: string;
  readonly log: Logger;
  readonly config: MqttAdapterConfig;
  readonly links: LinkView;
  /** the sink with its failures marked (sink.ts) */
  readonly sink: IngestSink;
  readonly reader: TimelineReader | undefined;
  readonly commands: readonly Command[];
  /** subscription id → the commands whose response filter has it */
  readonly responseSubs: ReadonlyMap<number, readonly Command[]>;
  readonly sync: SyncService | undefined;
  readonly syncSubId: number | undefined;
  readonly stats: MqttStats;
  readonly lifecycle: Lifecycle;
  session: Session;
  readonly rules: RulesState;
  /** commands sent and waiting for their response (deliver.ts adds, handlers/command-response.ts answers) */
  readonly pending: PendingCommands;
  /** appends not tied to a received message (summaries: ingest.ts, gateway notices: notices.ts) that stop() waits for */
  readonly background: Set<Promise<unknown>>;
  readonly inbound: InboundWindow;
  readonly catchup: CatchupQueue;
  readonly outbound: OutboundState;
  readonly wiring: Wiring;
}

/** Validates the config and compiles commands and sync; throws MqttConfigError when they are not valid. */
export function createState(deps: AdapterDeps<MqttAdapterConfig>, wiring: Wiring): MqttState {
  // the runtime binds `adapter` to deps.log already: binding it again would print the key twice
  const { name, log, links, reader } = deps;
  const config = parseMqttConfig(deps.config);
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
  if (sync && !reader) throw new MqttConfigError(['sync: this adapter was built without access to the log']);
  const responseSubs = new Map<number, Command[]>();
  for (const c of commands) {
    const id = subscriptionIdFor(c.responseFilter.plain);
    responseSubs.set(id, [...(responseSubs.get(id) ?? []), c]);
  }
  const state: MqttState = {
    name,
    log,
    config,
    links,
    sink,
    reader,
    commands,
    responseSubs,
    sync,
    syncSubId: sync ? subscriptionIdFor(sync.filter.plain) : undefined,
    stats: new MqttStats(log),
    lifecycle: { started: false, stopping: false, unwatch: undefined },
    rules: { current: compileRules([], config), responses: new Map() },
    background: new Set(),
    inbound: { inFlight: new Set(), gate: Promise.resolve(), roomWaiters: [], barriers: 0, queuedOnGate: 0 },
    pending: new PendingCommands({ onTimeout: (c) => wiring.onTimeout(state, c) }),
    session: openSession(config, log, wiring, () => state),
    catchup: { jobs: new Set(), waiting: [], active: 0 },
    outbound: { inFlight: new Set(), deliveredParts: new Map() },
    wiring,
  };
  return state;
}

/** A new session's connection and throttle, for start() after stop(). */
export function newSession(state: MqttState): Session {
  return openSession(state.config, state.log, state.wiring, () => state);
}

function openSession(config: MqttAdapterConfig, log: Logger, wiring: Wiring, state: () => MqttState): Session {
  return {
    connection: new MqttConnection({ config, log, onMessage: (msg) => wiring.onMessage(state(), msg) }),
    throttle: new Throttle<Suppressed>({ maxKeys: config.throttle.maxKeys, onSummary: (s) => wiring.onSummary(state(), s) }),
  };
}
