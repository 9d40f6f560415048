/**
 * What every handler of the component works with: the config, the explicit
 * state, the ports into the gateway, and a way to send. Built once in
 * index.ts; handlers are plain functions of it.
 */
import type { Logger } from 'pino';
import type { IngestSink, LinkView } from '../../src/core/adapter.js';
import type { Content, LogEvent } from '../../src/core/event.js';
import type { HistoryOptions, HistoryPage } from '../../src/core/ports.js';
import type { XmppRoomsConfig } from './config.js';
import type { XmlElement } from './ns.js';
import type { ComponentState } from './state.js';

/**
 * The room timeline, read as the room's archive (MAM, join history). The
 * event log satisfies it; the component never writes through it.
 */
export interface RoomArchive {
  readonly info: { readonly partitions: number };
  roomHistory(room: string, options: HistoryOptions): Promise<HistoryPage>;
  getEvent(room: string, eventId: string): Promise<LogEvent | undefined>;
}

/** The rooms a gateway user is granted (the same grants the HTTP API checks). */
export type GrantLookup = (user: string) => Promise<readonly string[]>;

/**
 * An event's content in XEP-0393 styling, converted as a delivery converts it
 * (src/bridge/format): what join history and MAM results render, the log
 * holding whatever format the sender used.
 */
export type ContentIn = (event: LogEvent, format: 'xep0393') => Content | undefined;

export interface XmppRoomsDeps {
  readonly name: string;
  readonly config: XmppRoomsConfig;
  readonly log: Logger;
  readonly sink: IngestSink;
  readonly links: LinkView;
  readonly archive: RoomArchive;
  readonly grants: GrantLookup;
  readonly contentIn: ContentIn;
}

export interface RoomsContext extends XmppRoomsDeps {
  readonly state: ComponentState;
  /** sends a stanza on the component stream; rejects when offline */
  send(stanza: XmlElement): Promise<void>;
  /** resolves once the server has every stanza sent so far; rejects when the stream drops first (or on timeout) */
  flush(): Promise<void>;
}
