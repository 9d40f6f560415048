/**
 * Adapter sections of the config: `adapters.<name>.type` picks the adapter
 * type, whose descriptor (src/runtime/adapter-list.ts) parses the rest.
 * Problems come back with their path, to be reported with the others. Nothing
 * here names an adapter type.
 */
import { configProblems } from '../core/adapter.js';
import { adapterEnvName } from '../core/descriptor.js';
import { ADAPTERS, adapterDescriptor, type AdapterSection, type AdapterType } from '../runtime/adapter-list.js';

export type { AdapterSection, AdapterType } from '../runtime/adapter-list.js';
export { adapterEnvName } from '../core/descriptor.js';

export const ADAPTER_TYPES: readonly AdapterType[] = ADAPTERS.map((d) => d.type as AdapterType);

/**
 * The secrets of each adapter type: the suffix of their environment variable
 * SYNCGATE_ADAPTER_<NAME>_<SUFFIX> → the path within the adapter's section.
 */
export const ADAPTER_SECRETS: Readonly<Record<string, Readonly<Record<string, readonly string[]>>>> = Object.fromEntries(
  ADAPTERS.map((d) => [d.type, Object.fromEntries(Object.entries(d.secrets).map(([suffix, secret]) => [suffix, secret.path]))]),
);

/**
 * The short forms of adapter secrets, SYNCGATE_<TYPE>_<SUFFIX> → path, for the
 * adapter named exactly like its type (the Helm chart's Secret keys).
 */
export const ADAPTER_SHORT_FORMS: Readonly<Record<string, readonly string[]>> = Object.fromEntries(
  ADAPTERS.flatMap((d) =>
    Object.entries(d.secrets)
      .filter(([, secret]) => secret.shortForm === true)
      .map(([suffix, secret]) => [`SYNCGATE_${adapterEnvName(d.type)}_${suffix}`, ['adapters', d.type, ...secret.path]]),
  ),
);

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
    const descriptor = typeof type === 'string' ? adapterDescriptor(type) : undefined;
    if (descriptor === undefined) {
      problems.push(`${where}/type: must be one of ${ADAPTER_TYPES.join(', ')}`);
      continue;
    }
    try {
      // the descriptor of `type` parsed it: the pair is one of AdapterSection's
      sections[name] = { type: descriptor.type, config: descriptor.parseConfig(rest) } as AdapterSection;
    } catch (err) {
      problems.push(...configProblems(err).map((p) => `${where}${p.startsWith('/') ? '' : ': '}${p}`));
    }
  }
  return { sections, problems };
}
