/**
 * Type declarations for the part of `@xmpp/client` 0.14 that syncgate uses;
 * the package ships none. Checked against its sources (client, connection,
 * stream-management, iq, middleware, ltx Element).
 */
declare module '@xmpp/client' {
  export type XmlAttrs = Record<string, string | undefined>;
  export type XmlChild = XmlElement | string;

  /** An ltx element: stanzas as parsed and as built by `xml()`. */
  export interface XmlElement {
    name: string;
    attrs: XmlAttrs;
    children: XmlChild[];
    parent: XmlElement | null;
    is(name: string, xmlns?: string): boolean;
    getName(): string;
    getNS(): string | undefined;
    getChild(name: string, xmlns?: string): XmlElement | undefined;
    getChildren(name: string, xmlns?: string): XmlElement[];
    getChildElements(): XmlElement[];
    getChildText(name: string, xmlns?: string): string | null;
    getText(): string;
    append(...nodes: XmlChild[]): XmlElement;
    remove(el: XmlElement | string, xmlns?: string): XmlElement;
    toString(): string;
  }

  export interface XmlParser {
    on(event: 'start', listener: (el: XmlElement) => void): void;
    on(event: 'element', listener: (el: XmlElement) => void): void;
    on(event: 'end', listener: (el: XmlElement) => void): void;
    on(event: 'error', listener: (err: Error) => void): void;
    write(data: string): void;
    end(data?: string): void;
  }

  export type XmlAttrInput = Record<string, string | number | undefined> | null;
  export type XmlChildInput = XmlElement | string | null | undefined | false | XmlChildInput[];

  export interface XmlFactory {
    (name: string, attrs?: XmlAttrInput, ...children: XmlChildInput[]): XmlElement;
    Parser: new () => XmlParser;
  }

  export const xml: XmlFactory;

  export interface Jid {
    readonly local: string;
    readonly domain: string;
    readonly resource: string;
    bare(): Jid;
    toString(): string;
  }

  export function jid(address: string): Jid;

  export interface StreamManagement {
    enabled: boolean;
    /** set when <enable/> went out, until <enabled/> or <failed/> */
    enableSent: boolean;
    id: string;
    /** XEP-0198 'h': stanzas received since <enabled/> */
    inbound: number;
    /** ms without any inbound traffic after an <r/> before the connection is dropped */
    timeout: number;
    /** ms of silence after which an <r/> is sent */
    requestAckInterval: number;
    requestAckDebounce: number;
    outbound_q: Array<{ stanza: XmlElement; stamp: string }>;
    on(event: 'ack' | 'fail', listener: (stanza: XmlElement) => void): void;
    on(event: 'resumed', listener: () => void): void;
    removeListener(event: string, listener: (...args: never[]) => void): void;
  }

  export interface IqCaller {
    /** resolves with the result iq; rejects with a StanzaError (`condition`) on an error reply, or on timeout */
    request(iq: XmlElement, timeoutMs?: number): Promise<XmlElement>;
  }

  export interface IqCalleeContext {
    stanza: XmlElement;
    element: XmlElement;
    from: Jid | null;
  }

  export interface IqCallee {
    get(ns: string, name: string, handler: (ctx: IqCalleeContext) => XmlElement | Record<string, never> | undefined | Promise<XmlElement | undefined>): void;
    set(ns: string, name: string, handler: (ctx: IqCalleeContext) => XmlElement | Record<string, never> | undefined | Promise<XmlElement | undefined>): void;
  }

  export interface Reconnect {
    delay: number;
    stop(): void;
    /** connects the socket and opens the stream (authentication and binding follow) */
    reconnect(): Promise<void>;
  }

  export type ClientStatus =
    | 'offline'
    | 'connecting'
    | 'connect'
    | 'opening'
    | 'open'
    | 'online'
    | 'closing'
    | 'close'
    | 'disconnecting'
    | 'disconnect';

  export interface ClientOptions {
    service: string;
    domain?: string;
    username?: string;
    password?: string;
    resource?: string;
    /** ms to wait for the stream to open or close (default 2000) */
    timeout?: number;
    lang?: string;
  }

  export interface Client {
    status: ClientStatus;
    jid: Jid | null;
    readonly options: ClientOptions;
    readonly reconnect: Reconnect;
    readonly streamManagement: StreamManagement;
    readonly iqCaller: IqCaller;
    readonly iqCallee: IqCallee;
    readonly socket: { destroy(): void; setNoDelay?(noDelay?: boolean): unknown } | null;
    start(): Promise<Jid>;
    stop(): Promise<unknown>;
    disconnect(): Promise<unknown>;
    send(element: XmlElement): Promise<void>;
    sendMany(elements: XmlElement[]): Promise<void>;
    on(event: 'stanza' | 'nonza' | 'element' | 'send', listener: (el: XmlElement) => void): void;
    on(event: 'online', listener: (jid: Jid) => void): void;
    on(event: 'error', listener: (err: Error & { condition?: string }) => void): void;
    on(event: 'status', listener: (status: ClientStatus, detail?: unknown) => void): void;
    on(event: 'disconnect' | 'offline' | 'connect' | 'open' | 'close', listener: (detail?: unknown) => void): void;
    prependListener(event: 'element', listener: (el: XmlElement) => void): void;
    removeAllListeners(event?: string): void;
  }

  export function client(options: ClientOptions): Client;
}
