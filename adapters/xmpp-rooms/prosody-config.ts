/**
 * `syncgate prosody-config` for an `xmpp-rooms` adapter: the Component
 * block Prosody needs so syncgate can host the rooms of `domain`.
 */
import type { XmppRoomsConfig } from './config.js';

export function componentConfigSnippet(config: Pick<XmppRoomsConfig, 'domain' | 'service'>): string {
  const port = /:(\d+)$/.exec(config.service)?.[1] ?? '5347';
  return [
    `-- syncgate: the rooms component ${config.domain} (XEP-0114); its archive is the syncgate log`,
    '-- Global section: where Prosody listens for external components (keep it off the public network).',
    `component_ports = { ${port} }`,
    'component_interfaces = { "127.0.0.1" }',
    '',
    `Component ${JSON.stringify(config.domain)}`,
    '  component_secret = "<the adapter\'s secret: SYNCGATE_ADAPTER_<NAME>_SECRET>"',
    '  -- no "muc" module: syncgate is the MUC service and serves its archive (MAM) itself',
    '',
  ].join('\n');
}
