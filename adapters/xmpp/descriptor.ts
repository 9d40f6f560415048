/**
 * The XMPP adapter type as the rest of syncgate sees it (src/core/descriptor.ts):
 * config schema, secrets, construction, link validation and the
 * `prosody-config` command. index.ts binds it to the factory.
 */
import type { Adapter, AdapterDeps } from '../../src/core/adapter.js';
import { problemsOf } from '../../src/core/adapter.js';
import type { AdapterCommand, AdapterDescriptor } from '../../src/core/descriptor.js';
import { SyncgateError } from '../../src/core/errors.js';
import type { SealedStore, StateStore } from '../../src/core/ports.js';
import { stateCatchupStore, type CatchupStore } from './catchup.js';
import { linkOptions, parseXmppConfig, XmppAdapterConfig } from './config.js';
import { ejabberdConfigSnippet } from './ejabberd-config.js';
import { prosodyConfigSnippet } from './prosody-config.js';

/** The factory's shape (createXmppAdapter), as the descriptor calls it. */
export type XmppFactory = (
  deps: AdapterDeps<XmppAdapterConfig> & { readonly catchup: CatchupStore; readonly state: Pick<StateStore, 'get' | 'set'>; readonly sealed: (ns: string, secret: string) => SealedStore },
) => Adapter;

const prosodyConfigCommand: AdapterCommand = {
  name: 'prosody-config',
  usage: 'prosody-config [--config FILE] [--adapter NAME] [--server prosody|ejabberd]',
  summary: 'the Prosody (or ejabberd) settings the XMPP bridge account needs',
  help: '  --adapter NAME   the XMPP adapter (default xmpp)\n  --server NAME    prosody (default) or ejabberd',
  options: { adapter: { type: 'string' }, server: { type: 'string' } },
  async run(io) {
    const server = io.options.get('server') ?? 'prosody';
    if (server !== 'prosody' && server !== 'ejabberd') throw new SyncgateError('SG_ERR_CLI_USAGE', `--server must be prosody or ejabberd, not ${server}`);
    const config = await io.config();
    const name = io.options.get('adapter') ?? 'xmpp';
    const section = config.adapters[name];
    // Other adapter types on the same server (the xmpp-rooms component) add their blocks.
    const others = io.contributions(config);
    if (section !== undefined && section.type !== 'xmpp') {
      const own = others.find((c) => c.adapter === name);
      if (own === undefined) throw new SyncgateError('SG_ERR_CLI_USAGE', `adapter ${name} (type ${section.type}) has no ${server} settings to print`);
      io.stdout(own.text);
      return 0;
    }
    if (section === undefined) throw new SyncgateError('SG_ERR_CLI_USAGE', `no XMPP adapter named ${name} in the configuration (adapters.${name}.type: xmpp)`);
    // The MUC services the bridge joins need MUC MAM too.
    const mucDomains = [...new Set(config.rooms.flatMap((r) => r.links).filter((l) => l.endpoint === name && l.options?.['type'] !== 'chat').map((l) => l.target.split('@')[1] ?? '').filter(Boolean))];
    io.stdout((server === 'ejabberd' ? ejabberdConfigSnippet : prosodyConfigSnippet)(section.config as XmppAdapterConfig, { mucDomains }));
    for (const other of others) io.stdout(`\n${other.text}`);
    return 0;
  },
};

export function describeXmppAdapter(create: XmppFactory): AdapterDescriptor<'xmpp', XmppAdapterConfig> {
  return {
    type: 'xmpp',
    schema: XmppAdapterConfig,
    parseConfig: parseXmppConfig,
    secrets: { PASSWORD: { path: ['password'], shortForm: true }, OMEMO_SECRET: { path: ['omemoSecret'] } },
    create: (deps) =>
      create({
        name: deps.name,
        config: deps.config,
        log: deps.log,
        sink: deps.sink,
        links: deps.links,
        catchup: stateCatchupStore(deps.state, `xmpp-catchup:${deps.name}`),
        state: deps.state,
        sealed: deps.sealed,
      }),
    linkProblems(_room, link) {
      return problemsOf(() => linkOptions(link));
    },
    commands: [prosodyConfigCommand],
  };
}
