/**
 * The adapter descriptor: everything the rest of syncgate needs to know about
 * one adapter type, in one place (docs/architecture.md, "Adapters as
 * plug-ins"). Each `adapters/<type>/index.ts` exports one; `src/runtime`
 * holds the one list of them, and the config loader, the CLI and the runtime
 * read that list instead of naming adapters.
 */
import type { TSchema } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Adapter, IngestSink, LinkView, TimelineReader } from './adapter.js';
import type { Content, LogEvent, TextFormat } from './event.js';
import type { EventLog, RoomLink, RoomSpec, SealedStore, StateStore } from './ports.js';

/** What the runtime hands every adapter it builds; each descriptor passes on what its factory takes. */
export interface AdapterCreateDeps<C> {
  /** the endpoint name (the key under `adapters:` in the config) */
  readonly name: string;
  readonly config: C;
  /** a child logger bound to `{adapter: name}` */
  readonly log: Logger;
  readonly sink: IngestSink;
  readonly links: LinkView;
  /** the timeline, for adapters that serve reads from a cursor */
  readonly reader: TimelineReader;
  /** the log's shared state store (namespaces are the adapter's own: `<what>:<name>`) */
  readonly state: StateStore;
  /**
   * A namespace of the state store whose values are encrypted with `secret`
   * (an adapter's configured secret, never stored): for crypto keys and
   * sessions. Namespaces are the adapter's own, as for `state`.
   */
  readonly sealed: (ns: string, secret: string) => SealedStore;
  /** a room's timeline read as its archive (history pages, one event by id), for adapters that serve it */
  readonly archive: Pick<EventLog, 'info' | 'roomHistory' | 'getEvent'>;
  /** the rooms a gateway user is granted (the grants the HTTP API checks), for adapters that admit people */
  readonly grants: (user: string) => Promise<readonly string[]>;
  /**
   * An event's content in a text format, converted and sanitised exactly as
   * a delivery's `context.content` is; for adapters that render events
   * straight from the log (join history, archive queries). Undefined for
   * kinds without content.
   */
  readonly contentIn: (event: LogEvent, format: TextFormat | 'plain') => Content | undefined;
}

/** One secret of an adapter's config section. */
export interface AdapterSecret {
  /** where it is within the adapter's section, e.g. `['appservice', 'asToken']` */
  readonly path: readonly string[];
  /**
   * Also settable as `SYNCGATE_<TYPE>_<SUFFIX>` for the adapter named exactly
   * like its type (the Helm chart's Secret keys), besides the
   * `SYNCGATE_ADAPTER_<NAME>_<SUFFIX>` every secret has.
   */
  readonly shortForm?: boolean;
}

/** The configuration as an adapter command sees it: sections parsed by their descriptors. */
export interface AdapterCommandConfig {
  readonly adapters: Readonly<Record<string, { readonly type: string; readonly config: unknown }>>;
  readonly rooms: readonly RoomSpec[];
}

/** What the CLI gives a command an adapter contributes. */
export interface AdapterCommandIO {
  /** the command's options by name (`--adapter NAME` → `adapter`); flags are `'true'` */
  readonly options: ReadonlyMap<string, string>;
  /** loads and validates the configuration (`--config` / SYNCGATE_CONFIG plus the SYNCGATE_* variables) */
  config(): Promise<AdapterCommandConfig>;
  /** the command's output, as is */
  stdout(text: string): void;
  /** a message line for the person at the terminal */
  say(line: string): void;
  /** writes a file only its owner can read (mode 0600) */
  writePrivateFile(path: string, text: string): void;
  /**
   * What the configured adapters of other types add to this command's output
   * (their descriptors' `contributes[command]`), in config order, with the
   * adapter names; `config` is what `config()` resolved to.
   */
  contributions(config: AdapterCommandConfig): ReadonlyArray<{ readonly adapter: string; readonly text: string }>;
}

/**
 * A part an adapter type adds to another type's command, e.g. the XMPP server
 * settings of a type that is not the bridge account but connects to the same
 * server (`xmpp-rooms` in `prosody-config`). Undefined: nothing for these options.
 */
export interface CommandContribution<C> {
  text(config: C, options: ReadonlyMap<string, string>): string | undefined;
}

/** A `syncgate <name>` subcommand an adapter contributes (it takes `--config FILE` too). */
export interface AdapterCommand {
  readonly name: string;
  /** the usage line after `syncgate ` */
  readonly usage: string;
  readonly summary: string;
  /** help lines of the command's own options (the CLI adds `--config`) */
  readonly help: string;
  readonly options: Readonly<Record<string, { readonly type: 'string' | 'boolean' }>>;
  /** resolves to the exit code; throws SyncgateError for usage and configuration errors */
  run(io: AdapterCommandIO): Promise<number>;
}

/**
 * One adapter type. Methods (not function properties), so a descriptor of a
 * specific config type fits the runtime's list of `AdapterDescriptor`.
 */
export interface AdapterDescriptor<T extends string = string, C = unknown> {
  /** the `type:` of its config sections */
  readonly type: T;
  /** the TypeBox schema of its config section (without `type`) */
  readonly schema: TSchema;
  /** defaults applied and validated; throws AdapterConfigError listing every problem */
  parseConfig(input: unknown): C;
  /**
   * Its secrets by environment suffix: `SYNCGATE_ADAPTER_<NAME>_<SUFFIX>` (and
   * `…_FILE`) set them, and they are never shown in a problem or a log.
   */
  readonly secrets: Readonly<Record<string, AdapterSecret>>;
  create(deps: AdapterCreateDeps<C>): Adapter;
  /**
   * Why one room link to an endpoint of this type cannot be bridged (checked at
   * start and by the admin API before it stores a room). Each problem is
   * `/field: message` or a plain message about the link as a whole.
   */
  linkProblems(room: string, link: RoomLink, config: C): string[];
  /** `syncgate` subcommands this adapter type contributes */
  readonly commands?: readonly AdapterCommand[];
  /** parts it adds to other types' commands, by command name */
  readonly contributes?: Readonly<Record<string, CommandContribution<C>>>;
}

/** An adapter name as it appears in an environment variable: xmpp-eu → XMPP_EU. */
export function adapterEnvName(name: string): string {
  return name.toUpperCase().replaceAll('-', '_');
}
