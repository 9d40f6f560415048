/**
 * The one dispatch: which handler each inbound stanza goes to. iq queries by
 * namespace through the library's iq callee (it answers what nobody handles
 * with service-unavailable); messages and presences by kind, in order per
 * room (a client's messages are appended in the order it sent them, and a
 * join completes before what follows it).
 */
import type { Component, IqAnswer } from '@xmpp/component';
import type { RoomsContext } from './context.js';
import { discoInfo, discoItems, selfPing } from './disco.js';
import { archiveForm, handleArchiveQuery } from './mam.js';
import { handleMessage } from './message-in.js';
import { NS, bareJid, type XmlElement } from './ns.js';
import { handlePresence } from './presence.js';

type Handler = (ctx: RoomsContext, stanza: XmlElement) => Promise<void>;

const HANDLERS: Readonly<Record<string, Handler>> = {
  message: handleMessage,
  presence: handlePresence,
};

export function installDispatch(xmpp: Component, ctx: RoomsContext): void {
  const guard =
    (what: string, handler: (stanza: XmlElement, element: XmlElement) => IqAnswer | Promise<IqAnswer>) =>
    async ({ stanza, element }: { stanza: XmlElement; element: XmlElement }): Promise<IqAnswer> => {
      try {
        return await handler(stanza, element);
      } catch (err) {
        ctx.log.error({ err, what }, 'iq handler failed');
        throw err;
      }
    };
  xmpp.iqCallee.get(NS.discoInfo, 'query', guard('disco#info', (stanza) => discoInfo(ctx, stanza)));
  xmpp.iqCallee.get(NS.discoItems, 'query', guard('disco#items', (stanza) => discoItems(ctx, stanza)));
  xmpp.iqCallee.get(NS.ping, 'ping', guard('ping', (stanza) => selfPing(ctx, stanza)));
  xmpp.iqCallee.get(NS.mam, 'query', guard('mam form', () => archiveForm()));
  xmpp.iqCallee.set(NS.mam, 'query', guard('mam query', (stanza, query) => handleArchiveQuery(ctx, stanza, query)));

  const queues = new Map<string, Promise<void>>();
  const inOrder = (key: string, work: () => Promise<void>): Promise<void> => {
    const next = (queues.get(key) ?? Promise.resolve()).then(work, work);
    const tail = next.catch(() => undefined);
    queues.set(key, tail);
    void tail.then(() => {
      if (queues.get(key) === tail) queues.delete(key);
    });
    return next;
  };

  xmpp.middleware.use((mctx, next) => {
    const stanza = mctx.stanza;
    const handler = HANDLERS[stanza.name];
    if (!handler) return next();
    const room = bareJid(stanza.attrs['to'] ?? '');
    inOrder(room, () => handler(ctx, stanza)).catch((err: unknown) => ctx.log.error({ err, kind: stanza.name }, 'stanza handler failed'));
    return undefined;
  });
}
