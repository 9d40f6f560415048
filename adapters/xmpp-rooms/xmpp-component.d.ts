/**
 * Type declarations for the part of `@xmpp/component` 0.13 that the rooms
 * component uses; the package ships none. Checked against its sources
 * (component, component-core, connection, iq callee, middleware). Elements
 * are ltx elements, typed as in the `@xmpp/client` declarations; build them
 * with this package's own `xml` (the iq callee checks `instanceof` its
 * own @xmpp/xml Element class).
 */
declare module '@xmpp/component' {
  import type { XmlElement, XmlFactory, Jid } from '@xmpp/client';

  export const xml: XmlFactory;

  export interface IqCalleeContext {
    stanza: XmlElement;
    element: XmlElement;
    from: Jid | null;
  }

  /** answers with the child of the result iq, an `<error/>` for an error iq, undefined for service-unavailable */
  export type IqHandler = (ctx: IqCalleeContext) => IqAnswer | Promise<IqAnswer>;
  /** `{}`: an empty result */
  export type IqAnswer = XmlElement | Record<string, never> | undefined;

  export interface IqCallee {
    get(ns: string, name: string, handler: IqHandler): void;
    set(ns: string, name: string, handler: IqHandler): void;
  }

  export interface IqCaller {
    /** sends the iq (an id is added) and resolves with the result iq; rejects with a StanzaError (name 'StanzaError') for an error iq, or on timeout */
    request(stanza: XmlElement, timeoutMs?: number): Promise<XmlElement>;
  }

  export interface Middleware {
    use(fn: (ctx: { stanza: XmlElement; from: Jid | null }, next: () => Promise<unknown>) => unknown): void;
  }

  export interface Reconnect {
    delay: number;
    stop(): void;
    reconnect(): Promise<void>;
  }

  export type ComponentStatus = 'offline' | 'connecting' | 'connect' | 'opening' | 'open' | 'online' | 'closing' | 'close' | 'disconnecting' | 'disconnect';

  export interface ComponentOptions {
    /** `xmpp://host:port` of the server's component listener */
    service: string;
    /** the component's domain */
    domain: string;
    /** the shared secret of the XEP-0114 handshake */
    password: string;
  }

  export interface Component {
    status: ComponentStatus;
    jid: Jid | null;
    timeout: number;
    readonly reconnect: Reconnect;
    readonly iqCallee: IqCallee;
    readonly iqCaller: IqCaller;
    readonly middleware: Middleware;
    readonly socket: { destroy(): void; setNoDelay?(noDelay?: boolean): unknown } | null;
    start(): Promise<Jid>;
    stop(): Promise<unknown>;
    disconnect(): Promise<unknown>;
    send(element: XmlElement): Promise<void>;
    on(event: 'stanza' | 'nonza' | 'element' | 'send', listener: (el: XmlElement) => void): void;
    on(event: 'online', listener: (jid: Jid) => void): void;
    on(event: 'error', listener: (err: Error & { condition?: string }) => void): void;
    on(event: 'status', listener: (status: ComponentStatus, detail?: unknown) => void): void;
    on(event: 'disconnect' | 'offline' | 'connect' | 'open' | 'close', listener: (detail?: unknown) => void): void;
    removeAllListeners(event?: string): void;
  }

  export function component(options: ComponentOptions): Component;
}
