/**
 * `syncgate prosody-config --server ejabberd`: the ejabberd counterpart of
 * prosody-config.ts — the ejabberd.yml settings the bridge account and its
 * MUCs need (ejabberd 23.01 module names).
 */
import { accountDomain, type XmppAdapterConfig } from './config.js';
import type { ProsodySnippetOptions } from './prosody-config.js';

export function ejabberdConfigSnippet(config: Pick<XmppAdapterConfig, 'jid'> & Partial<Pick<XmppAdapterConfig, 'domain' | 'catchupMaxAgeMs' | 'omemo' | 'omemoSecret'>>, options: ProsodySnippetOptions = {}): string {
  const domain = accountDomain({ jid: config.jid, ...(config.domain !== undefined ? { domain: config.domain } : {}) } as XmppAdapterConfig);
  const mucs = options.mucDomains && options.mucDomains.length > 0 ? [...new Set(options.mucDomains.map((d) => d.toLowerCase()))] : [`conference.${domain}`];
  const keepDays = Math.max(7, Math.ceil((config.catchupMaxAgeMs ?? 7 * 24 * 3600 * 1000) / (24 * 3600 * 1000)));
  const q = (s: string) => JSON.stringify(s);
  return [
    `# syncgate: ejabberd settings for the bridge account ${config.jid}`,
    '# Merge into ejabberd.yml (keep your other modules and options), then restart ejabberd',
    '# (or `ejabberdctl reload_config`).',
    '',
    'hosts:',
    `  - ${q(domain)}`,
    '',
    'modules:',
    '  mod_carboncopy: {}      # XEP-0280 Carbons: copies of messages sent/received by other resources',
    '  mod_mam:                # XEP-0313: the account archive (and, with mod_muc, the room archives)',
    '    default: always       # archive 1:1 messages without each account asking for it',
    '    assume_mam_usage: true',
    '  mod_stream_mgmt:        # XEP-0198: acks and resumption',
    '    resume_timeout: 600   # let a restarted bridge resume or replace its session',
    '  mod_ping: {}            # XEP-0199',
    '  mod_disco: {}',
    '  mod_offline: {}         # messages to the bridge while it is away (also recovered from MAM)',
    '  mod_muc:',
    mucs.length === 1 ? `    host: ${q(mucs[0] as string)}` : `    hosts: [${mucs.map(q).join(', ')}]`,
    '    access_mam: all       # room archives readable by occupants (the bridge catches up from them)',
    '    default_room_options:',
    '      mam: true           # archive new rooms; an existing room: its `mam` configuration field',
    '      persistent: true',
    '  # ejabberd 23.01 MUC stamps XEP-0359 stanza-ids and answers XEP-0410 self-pings, but adds no',
    '  # XEP-0421 occupant ids: syncgate then follows nick changes (status 303) to keep senders apart.',
    ...(config.omemo !== 'off' && config.omemoSecret !== undefined
      ? ['  mod_caps: {}            # XEP-0115: the bridge asks for device list notifications through its caps', '  mod_pubsub:             # XEP-0163 PEP: the bridge\'s OMEMO device list and bundle', '    plugins: ["flat", "pep"]']
      : ['  # For OMEMO (the bridge\'s device once omemoSecret is set, and your users\' keys):', '  # mod_caps: {}', '  # mod_pubsub:', '  #   plugins: ["flat", "pep"]']),
    '',
    `# ejabberd keeps archives until deleted: keep at least ${keepDays} days (the catch-up window), e.g. daily`,
    `#   ejabberdctl delete_old_mam_messages all ${keepDays}`,
    `# Create the account once: ejabberdctl register ${config.jid.split('@')[0] ?? ''} ${domain} <password>`,
    '',
  ].join('\n');
}
