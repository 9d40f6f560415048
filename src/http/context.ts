/**
 * What the route modules share; built once per app by buildApp.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config/index.js';
import type { MediaFile } from '../core/adapter.js';
import type { EventLog, RoomSpec } from '../core/ports.js';
import type { Directory } from './directory.js';
import type { LiveHub } from './live.js';
import type { HttpMetrics } from './metrics.js';
import type { ViewCache } from './view.js';

/** `viewerTokens` and `console` may be left out by callers that build the app themselves (tests, benchmarks): none, and off. */
export type HttpConfig = Omit<Config['http'], 'viewerTokens' | 'console'> & Partial<Pick<Config['http'], 'viewerTokens' | 'console'>>;

/** Events in and out per second on one link (room × adapter), all replicas together. */
export interface LinkRateView {
  readonly room: string;
  readonly endpoint: string;
  readonly inPerSecond: number;
  readonly outPerSecond: number;
}

/** Each adapter's state on this replica (GET /v1/admin/status); provided by the runtime. */
export type StatusReport = () => Promise<{
  readonly log: unknown;
  readonly adapters: Readonly<Record<string, unknown>>;
  readonly replicas?: readonly unknown[];
  readonly linkRates?: readonly LinkRateView[];
}>;

/** Asks the linked endpoints whether they can bridge a room's links; the refusals. */
export type LinkCheck = (spec: RoomSpec) => Promise<ReadonlyArray<{ readonly endpoint: string; readonly target: string; readonly reason: 'encrypted' | 'unencrypted'; readonly detail: string }>>;

/** The file behind an attachment URL's id at an endpoint; undefined when there is none. */
export type MediaSource = (endpoint: string, id: string) => Promise<MediaFile | undefined>;

/** A sample for an MQTT rule test (POST /v1/admin/rules/test). */
export interface RuleTestInput {
  readonly filter: string;
  readonly options?: Readonly<Record<string, string | number | boolean>>;
  readonly topic: string;
  readonly payload: string;
  readonly room?: string;
  /** the adapter whose rules to use (default: the first with inbound rules) */
  readonly endpoint?: string;
}
export interface RuleTestResult {
  readonly matched: boolean;
  readonly message?: unknown;
  readonly error?: string;
}
/** Runs an MQTT rule on a sample; provided by the runtime when an MQTT adapter is configured. */
export type RuleTester = (input: RuleTestInput) => Promise<RuleTestResult>;

export interface HttpContext {
  readonly log: EventLog;
  readonly logger: Logger;
  readonly config: HttpConfig;
  readonly directory: Directory;
  /** the per-device rate limit, run by the device auth hook once the device is known */
  readonly rateLimit: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  readonly metrics: HttpMetrics;
  readonly registry: Registry;
  readonly views: ViewCache;
  readonly live: LiveHub;
  readonly status: StatusReport | undefined;
  readonly validateRoom: ((spec: RoomSpec) => readonly string[]) | undefined;
  /** endpoint name → the largest body it carries whole (UTF-8 bytes) */
  readonly bodyLimits: Readonly<Record<string, number>>;
  readonly checkLinks: LinkCheck | undefined;
  readonly testRule: RuleTester | undefined;
  /** a file an adapter serves under an attachment URL's id (GET /v1/media/:endpoint/:id) */
  readonly media: MediaSource | undefined;
}
