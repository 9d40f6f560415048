/**
 * Builds the adapters named in the config — the one place that imports the
 * adapter factories. Each gets a child logger, the ingest sink, the room
 * links and (where it keeps state across restarts) the log's state store.
 */
import type { Logger } from 'pino';
import { createMatrixAdapter } from '../../adapters/matrix/index.js';
import { createMqttAdapter, validateMqttRule } from '../../adapters/mqtt/index.js';
import { createXmppAdapter, stateCatchupStore, validateXmppLink } from '../../adapters/xmpp/index.js';
import { xmppRoomsDescriptor } from '../../adapters/xmpp-rooms/descriptor.js';
import { Directory } from '../http/directory.js';
import type { Config } from '../config/index.js';
import { configProblems, type Adapter } from '../core/adapter.js';
import type { EventLog, RoomSpec } from '../core/ports.js';
import type { BridgeSink } from '../bridge/ingest.js';
import type { RoomLinks } from '../bridge/links.js';

export interface AdapterContext {
  readonly log: EventLog;
  readonly sink: BridgeSink;
  readonly links: RoomLinks;
  readonly logger: Logger;
}

export function createAdapters(config: Config, context: AdapterContext): Adapter[] {
  return Object.entries(config.adapters).map(([name, section]) => {
    const common = { name, sink: context.sink, links: context.links, log: context.logger.child({ adapter: name }) };
    switch (section.type) {
      case 'matrix':
        return createMatrixAdapter({ ...common, config: section.config, state: context.log.state });
      case 'mqtt':
        return createMqttAdapter({ ...common, config: section.config, reader: context.log });
      case 'xmpp':
        return createXmppAdapter({ ...common, config: section.config, catchup: stateCatchupStore(context.log.state, `xmpp-catchup:${name}`), state: context.log.state });
      case 'xmpp-rooms': {
        // the room archive is the log; who may join is decided by the HTTP API's users and grants
        const directory = new Directory(context.log);
        return xmppRoomsDescriptor.create({ ...common, config: section.config, archive: context.log, grants: (user) => directory.grants(user) });
      }
    }
  });
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
    switch (section.type) {
      case 'mqtt':
        try {
          validateMqttRule(spec.id, link, section.config);
        } catch (err) {
          problems.push(...configProblems(err).map((p) => `${where}: ${p}`));
        }
        break;
      case 'matrix':
        if (!/^![^:]+:.+$/.test(link.target)) problems.push(`${where}/target: a Matrix room id (!opaque:server) is required, got ${link.target}`);
        break;
      case 'xmpp-rooms':
        try {
          xmppRoomsDescriptor.validateLink(spec.id, link);
        } catch (err) {
          problems.push(...configProblems(err).map((p) => `${where}: ${p}`));
        }
        break;
      case 'xmpp':
        try {
          validateXmppLink(link);
        } catch (err) {
          problems.push(...configProblems(err).map((p) => `${where}: ${p}`));
        }
        break;
    }
  });
  return problems;
}
