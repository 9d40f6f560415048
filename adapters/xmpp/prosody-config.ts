/**
 * `syncgate prosody-config`: the Prosody configuration an operator needs for
 * the bridge account and its MUCs (Prosody 0.12 module names).
 */
import { accountDomain, type XmppAdapterConfig } from './config.js';

export interface ProsodySnippetOptions {
  /** the MUC service domains (e.g. the domains of the linked rooms); default `conference.<account domain>` */
  readonly mucDomains?: readonly string[];
}

export function prosodyConfigSnippet(config: Pick<XmppAdapterConfig, 'jid'> & Partial<Pick<XmppAdapterConfig, 'domain' | 'catchupMaxAgeMs' | 'omemo' | 'omemoSecret'>>, options: ProsodySnippetOptions = {}): string {
  const domain = accountDomain({ jid: config.jid, ...(config.domain !== undefined ? { domain: config.domain } : {}) } as XmppAdapterConfig);
  const mucs = options.mucDomains && options.mucDomains.length > 0 ? [...new Set(options.mucDomains.map((d) => d.toLowerCase()))] : [`conference.${domain}`];
  const keepDays = Math.max(7, Math.ceil((config.catchupMaxAgeMs ?? 7 * 24 * 3600 * 1000) / (24 * 3600 * 1000)));
  const q = (s: string) => JSON.stringify(s);
  return [
    `-- syncgate: Prosody settings for the bridge account ${config.jid}`,
    '-- Merge into prosody.cfg.lua (global section unless noted), then restart Prosody.',
    '',
    'modules_enabled = {',
    '  -- (keep your existing modules; these are the ones syncgate relies on)',
    '  "carbons";  -- XEP-0280: copies of messages sent/received by other resources',
    '  "mam";      -- XEP-0313: the account archive syncgate catches up from',
    '  "smacks";   -- XEP-0198: stream management (acks, resumption)',
    '  "ping";     -- XEP-0199',
    '  "disco";',
    '  "offline";  -- messages to the bridge while it is away (also recovered from MAM)',
    config.omemo !== 'off' && config.omemoSecret !== undefined
      ? '  "pep";     -- XEP-0163: the bridge\'s OMEMO device list and bundle (and your users\' OMEMO keys)'
      : '  -- "pep"; -- for OMEMO (the bridge\'s device with omemoSecret set, and your users\' keys)',
    '}',
    '',
    '-- Keep the archive at least as long as syncgate may be down (catch-up window).',
    'default_archive_policy = true',
    `archive_expires_after = "${keepDays}d"`,
    '-- Let a restarted bridge resume or replace its session quickly.',
    'smacks_hibernation_time = 600',
    '',
    `VirtualHost ${q(domain)}`,
    '',
    ...mucs.flatMap((muc) => [
      `Component ${q(muc)} "muc"`,
      '  modules_enabled = {',
      '    "muc_mam";  -- XEP-0313 on rooms: room history syncgate catches up from',
      '  }',
      '  -- Prosody 0.12 MUC stamps XEP-0359 stanza-ids, keeps message ids (muc#stable_id),',
      '  -- answers XEP-0410 self-pings and adds XEP-0421 occupant ids (muc_occupant_id, on by default).',
      '  muc_log_by_default = true',
      '  muc_log_all_rooms = false   -- true archives every room; otherwise enable "archiving" in each bridged room',
      `  muc_log_expires_after = "${keepDays}d"`,
      '',
    ]),
    `-- Create the account once: prosodyctl adduser ${config.jid}`,
    '',
  ].join('\n');
}
