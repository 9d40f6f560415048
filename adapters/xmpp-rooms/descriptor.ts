/**
 * The `xmpp-rooms` adapter type as the rest of syncgate sees it
 * (src/core/descriptor.ts): config schema and parser, secrets, link
 * validation, construction, and the Component block it adds to
 * `syncgate prosody-config`. index.ts binds it to the factory.
 */
import { problemsOf, type Adapter } from '../../src/core/adapter.js';
import type { AdapterDescriptor } from '../../src/core/descriptor.js';
import { XmppRoomsConfig, parseXmppRoomsConfig, validateRoomsLink } from './config.js';
import type { XmppRoomsDeps } from './context.js';
import { componentConfigSnippet } from './prosody-config.js';

export function describeXmppRoomsAdapter(create: (deps: XmppRoomsDeps) => Adapter): AdapterDescriptor<'xmpp-rooms', XmppRoomsConfig> {
  return {
    type: 'xmpp-rooms',
    schema: XmppRoomsConfig,
    parseConfig: parseXmppRoomsConfig,
    secrets: { SECRET: { path: ['secret'] } },
    create: (deps) => create({ name: deps.name, config: deps.config, log: deps.log, sink: deps.sink, links: deps.links, archive: deps.archive, grants: deps.grants, contentIn: deps.contentIn }),
    linkProblems(_room, link) {
      return problemsOf(() => validateRoomsLink(link));
    },
    // Prosody only: an ejabberd listener entry is described in the README, not printed.
    contributes: { 'prosody-config': { text: (config, options) => ((options.get('server') ?? 'prosody') === 'prosody' ? componentConfigSnippet(config) : undefined) } },
  };
}
