/**
 * Adapter sections of the config: `adapters.<name>.type` picks the adapter
 * type, whose own schema (in adapters/<type>/config.ts) validates the rest.
 * Problems come back with their path, to be reported with the others.
 */
import { configProblems } from '../core/adapter.js';
import { parseMatrixConfig, type MatrixAdapterConfig } from '../../adapters/matrix/config.js';
import { parseMqttConfig, type MqttAdapterConfig } from '../../adapters/mqtt/config.js';
import { parseXmppConfig, type XmppAdapterConfig } from '../../adapters/xmpp/config.js';
import { xmppRoomsDescriptor } from '../../adapters/xmpp-rooms/descriptor.js';
import type { XmppRoomsConfig } from '../../adapters/xmpp-rooms/config.js';

export type AdapterSection =
  | { readonly type: 'matrix'; readonly config: MatrixAdapterConfig }
  | { readonly type: 'mqtt'; readonly config: MqttAdapterConfig }
  | { readonly type: 'xmpp'; readonly config: XmppAdapterConfig }
  | { readonly type: 'xmpp-rooms'; readonly config: XmppRoomsConfig };

export type AdapterType = AdapterSection['type'];

interface Parser<C> {
  parse(input: unknown): C;
}

const PARSERS: { [T in AdapterType]: Parser<Extract<AdapterSection, { type: T }>['config']> } = {
  matrix: { parse: parseMatrixConfig },
  mqtt: { parse: parseMqttConfig },
  xmpp: { parse: parseXmppConfig },
  'xmpp-rooms': { parse: xmppRoomsDescriptor.parse },
};

export const ADAPTER_TYPES = Object.keys(PARSERS) as AdapterType[];

/**
 * The secrets of each adapter type: the suffix of their environment variable
 * SYNCGATE_ADAPTER_<NAME>_<SUFFIX> → the path within the adapter's section.
 */
export const ADAPTER_SECRETS: { readonly [T in AdapterType]: Readonly<Record<string, readonly string[]>> } = {
  matrix: { AS_TOKEN: ['appservice', 'asToken'], HS_TOKEN: ['appservice', 'hsToken'], ACCESS_TOKEN: ['bot', 'accessToken'], PASSWORD: ['bot', 'password'] },
  mqtt: { URL: ['url'], PASSWORD: ['password'] },
  xmpp: { PASSWORD: ['password'] },
  'xmpp-rooms': xmppRoomsDescriptor.secrets,
};

/** An adapter's name as it appears in an environment variable: xmpp-eu → XMPP_EU. */
export function adapterEnvName(name: string): string {
  return name.toUpperCase().replaceAll('-', '_');
}


/** Validates every adapter section; returns the parsed sections and the problems (paths under /adapters/<name>). */
export function parseAdapterSections(raw: Readonly<Record<string, unknown>>): { sections: Record<string, AdapterSection>; problems: string[] } {
  const sections: Record<string, AdapterSection> = {};
  const problems: string[] = [];
  for (const [name, value] of Object.entries(raw)) {
    const where = `/adapters/${name}`;
    if (name === 'api') {
      problems.push(`${where}: "api" is the HTTP API's endpoint name and cannot name an adapter`);
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      problems.push(`${where}: must be a mapping`);
      continue;
    }
    const { type, ...rest } = value as Record<string, unknown>;
    if (typeof type !== 'string' || !(ADAPTER_TYPES as string[]).includes(type)) {
      problems.push(`${where}/type: must be one of ${ADAPTER_TYPES.join(', ')}`);
      continue;
    }
    try {
      if (type === 'matrix') sections[name] = { type, config: PARSERS.matrix.parse(rest) };
      else if (type === 'mqtt') sections[name] = { type, config: PARSERS.mqtt.parse(rest) };
      else if (type === 'xmpp') sections[name] = { type, config: PARSERS.xmpp.parse(rest) };
      else if (type === 'xmpp-rooms') sections[name] = { type, config: PARSERS['xmpp-rooms'].parse(rest) };
    } catch (err) {
      problems.push(...configProblems(err).map((p) => `${where}${p.startsWith('/') ? '' : ': '}${p}`));
    }
  }
  return { sections, problems };
}
