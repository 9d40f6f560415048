/**
 * The `xmpp-rooms` adapter type as one descriptor (the shape every adapter
 * is moving to): its type name, config schema and parser, secrets, link
 * validation and factory. The runtime names it in one place.
 */
import type { Adapter } from '../../src/core/adapter.js';
import type { RoomLink } from '../../src/core/ports.js';
import { XmppRoomsConfig, parseXmppRoomsConfig, validateRoomsLink } from './config.js';
import type { XmppRoomsDeps } from './context.js';
import { createXmppRoomsAdapter } from './index.js';
import { componentConfigSnippet } from './prosody-config.js';

export const xmppRoomsDescriptor = {
  type: 'xmpp-rooms',
  schema: XmppRoomsConfig,
  parse: parseXmppRoomsConfig,
  /** SYNCGATE_ADAPTER_<NAME>_<SUFFIX> → path in the section */
  secrets: { SECRET: ['secret'] } as Readonly<Record<string, readonly string[]>>,
  validateLink: (_room: string, link: RoomLink): void => validateRoomsLink(link),
  create: (deps: XmppRoomsDeps): Adapter => createXmppRoomsAdapter(deps),
  prosodyConfig: componentConfigSnippet,
} as const;
