/**
 * The MQTT adapter type as the rest of syncgate sees it (src/core/descriptor.ts):
 * config schema, secrets, construction and link (rule) validation. index.ts
 * binds it to the factory.
 */
import type { Adapter, AdapterDeps } from '../../src/core/adapter.js';
import { problemsOf } from '../../src/core/adapter.js';
import type { AdapterDescriptor } from '../../src/core/descriptor.js';
import { MqttAdapterConfig, parseMqttConfig } from './config.js';
import { compileRule } from './rules.js';

/** The factory's shape (createMqttAdapter), as the descriptor calls it. */
export type MqttFactory = (deps: AdapterDeps<MqttAdapterConfig>) => Adapter;

export function describeMqttAdapter(create: MqttFactory): AdapterDescriptor<'mqtt', MqttAdapterConfig> {
  return {
    type: 'mqtt',
    schema: MqttAdapterConfig,
    parseConfig: parseMqttConfig,
    secrets: { URL: { path: ['url'], shortForm: true }, PASSWORD: { path: ['password'], shortForm: true } },
    create: (deps) => create({ name: deps.name, config: deps.config, log: deps.log, sink: deps.sink, links: deps.links, reader: deps.reader }),
    linkProblems(room, link, config) {
      return problemsOf(() => compileRule(room, link, config));
    },
  };
}
