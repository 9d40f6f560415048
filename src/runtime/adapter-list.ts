/**
 * The adapter types this build knows: the one list of descriptors, and the
 * only module under src/ that imports an adapter (eslint.config.js). The
 * config loader, the CLI and the runtime read it; adding a protocol is one
 * folder under adapters/ and one entry here (README, "Adding an adapter").
 */
import { matrixAdapter } from '../../adapters/matrix/index.js';
import { mqttAdapter } from '../../adapters/mqtt/index.js';
import { xmppAdapter } from '../../adapters/xmpp/index.js';
import { xmppRoomsAdapter } from '../../adapters/xmpp-rooms/index.js';
import type { AdapterDescriptor } from '../core/descriptor.js';

export const ADAPTER_DESCRIPTORS = [matrixAdapter, mqttAdapter, xmppAdapter, xmppRoomsAdapter] as const;

/** A parsed `adapters.<name>` section: its type and the config its descriptor parsed. */
export type AdapterSection = SectionOf<(typeof ADAPTER_DESCRIPTORS)[number]>;
type SectionOf<D> = D extends AdapterDescriptor<infer T, infer C> ? { readonly type: T; readonly config: C } : never;

export type AdapterType = AdapterSection['type'];

/** The list as the generic code uses it: every descriptor by its type, config unknown. */
export const ADAPTERS: readonly AdapterDescriptor[] = ADAPTER_DESCRIPTORS;

/** The descriptor of an adapter type, or undefined for an unknown type. */
export function adapterDescriptor(type: string): AdapterDescriptor | undefined {
  return ADAPTERS.find((d) => d.type === type);
}
