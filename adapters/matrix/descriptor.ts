/**
 * The Matrix adapter type as the rest of syncgate sees it (src/core/descriptor.ts):
 * config schema, secrets, construction, link validation and the
 * `matrix-registration` command. index.ts binds it to the factory.
 */
import type { Adapter, AdapterDeps } from '../../src/core/adapter.js';
import type { AdapterCommand, AdapterDescriptor } from '../../src/core/descriptor.js';
import { SyncgateError } from '../../src/core/errors.js';
import { MatrixAdapterConfig, parseMatrixConfig, registrationYaml } from './config.js';
import type { SealedStore } from '../../src/core/ports.js';
import type { MatrixState } from './store.js';

/** The factory's shape (createMatrixAdapter), as the descriptor calls it. */
export type MatrixFactory = (deps: AdapterDeps<MatrixAdapterConfig> & { readonly state: MatrixState; readonly sealed: (ns: string, secret: string) => SealedStore }) => Adapter;

const registrationCommand: AdapterCommand = {
  name: 'matrix-registration',
  usage: 'matrix-registration [--config FILE] [--adapter NAME] [--out FILE]',
  summary: 'the application-service registration YAML for the homeserver',
  help: '  --adapter NAME   the Matrix adapter (default matrix)\n  --out FILE       write it to FILE (mode 0600) instead of stdout',
  options: { adapter: { type: 'string' }, out: { type: 'string' } },
  async run(io) {
    const config = await io.config();
    const name = io.options.get('adapter') ?? 'matrix';
    const section = config.adapters[name];
    if (section?.type !== 'matrix') throw new SyncgateError('SG_ERR_CONFIG_INVALID', `no Matrix adapter named ${name} in the configuration (adapters.${name}.type: matrix)`);
    const text = registrationYaml(section.config as MatrixAdapterConfig);
    const out = io.options.get('out');
    if (out) {
      // The file holds both tokens: readable by its owner only.
      io.writePrivateFile(out, text);
      io.say(`wrote ${out}; give it to the homeserver (e.g. Synapse app_service_config_files) and restart it`);
    } else {
      io.stdout(text);
    }
    return 0;
  },
};

export function describeMatrixAdapter(create: MatrixFactory): AdapterDescriptor<'matrix', MatrixAdapterConfig> {
  return {
    type: 'matrix',
    schema: MatrixAdapterConfig,
    parseConfig: parseMatrixConfig,
    secrets: {
      AS_TOKEN: { path: ['appservice', 'asToken'], shortForm: true },
      HS_TOKEN: { path: ['appservice', 'hsToken'], shortForm: true },
      ACCESS_TOKEN: { path: ['bot', 'accessToken'], shortForm: true },
      PASSWORD: { path: ['bot', 'password'] },
      ENCRYPTION_STORE_SECRET: { path: ['encryption', 'storeSecret'] },
    },
    create: (deps) => create({ name: deps.name, config: deps.config, log: deps.log, sink: deps.sink, links: deps.links, state: deps.state, sealed: deps.sealed }),
    linkProblems(_room, link) {
      return /^![^:]+:.+$/.test(link.target) ? [] : [`/target: a Matrix room id (!opaque:server) is required, got ${link.target}`];
    },
    commands: [registrationCommand],
  };
}
