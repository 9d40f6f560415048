/**
 * Builds the adapters named in the config through their descriptors
 * (adapter-list.ts). Each gets a child logger, the ingest sink, the room
 * links, the timeline and the log's state store; its descriptor passes on
 * what its factory takes.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { Adapter } from '../core/adapter.js';
import type { EventLog, RoomSpec } from '../core/ports.js';
import type { BridgeSink } from '../bridge/ingest.js';
import type { RoomLinks } from '../bridge/links.js';
import { contentInFormat } from '../bridge/format/index.js';
import { Directory } from '../http/directory.js';
import { adapterDescriptor } from './adapter-list.js';
import type { LeaseFence } from './lease-fence.js';
import { createSealedStore } from './sealed-store.js';

export interface AdapterContext {
  readonly log: EventLog;
  readonly sink: BridgeSink;
  readonly links: RoomLinks;
  readonly logger: Logger;
  /** the fence of an adapter's connection lease (supervisor.ts): its sealed state is written under it */
  readonly fence?: (adapter: string) => LeaseFence;
}

function descriptorOf(type: string) {
  const descriptor = adapterDescriptor(type);
  // resolveConfig accepted only types of the list
  if (descriptor === undefined) throw new Error(`no adapter type ${type}`);
  return descriptor;
}

export function createAdapters(config: Config, context: AdapterContext): Adapter[] {
  // who may join hosted rooms is decided by the HTTP API's users and grants
  const directory = new Directory(context.log);
  return Object.entries(config.adapters).map(([name, section]) =>
    descriptorOf(section.type).create({
      name,
      config: section.config,
      log: context.logger.child({ adapter: name }),
      sink: context.sink,
      links: context.links,
      reader: context.log,
      state: context.log.state,
      sealed: (ns, secret) => createSealedStore(context.log.state, ns, secret, context.fence?.(name)),
      archive: context.log,
      grants: (user) => directory.grants(user),
      contentIn: contentInFormat,
    }),
  );
}

/**
 * Checks a room's links against the configured adapters before the admin API
 * stores it: the endpoint must exist, and its adapter must accept the target.
 */
export function roomLinkProblems(config: Config, spec: RoomSpec, extraEndpoints: readonly string[] = []): string[] {
  const problems: string[] = [];
  spec.links.forEach((link, i) => {
    const where = `/links/${i}`;
    if (link.endpoint === 'api' || extraEndpoints.includes(link.endpoint)) return;
    const section = config.adapters[link.endpoint];
    if (!section) {
      problems.push(`${where}/endpoint: no adapter named ${link.endpoint} (configured: ${['api', ...Object.keys(config.adapters), ...extraEndpoints].join(', ')})`);
      return;
    }
    for (const p of descriptorOf(section.type).linkProblems(spec.id, link, section.config)) problems.push(`${where}${p.startsWith('/') ? '' : ': '}${p}`);
  });
  return problems;
}
