/**
 * Builds the adapters named in the config — the one place that imports the
 * adapter factories. Each gets a child logger, the ingest sink, the room
 * links and (where it keeps state across restarts) the log's state store.
 */
import type { Logger } from 'pino';
import { createMatrixAdapter } from '../../adapters/matrix/index.js';
import { createMqttAdapter } from '../../adapters/mqtt/index.js';
import type { Config } from '../config/index.js';
import type { Adapter } from '../core/adapter.js';
import type { EventLog } from '../core/ports.js';
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
        return createMqttAdapter({ ...common, config: section.config });
    }
  });
}
