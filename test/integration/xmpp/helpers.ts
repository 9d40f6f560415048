/**
 * Shared pieces of the XMPP adapter integration tests: a log (memory or
 * Redis) with the real ingest sink and room links, the adapter on it, a
 * delivery helper that does what the delivery engine does around deliver()
 * (references, format conversion, recording native ids, retrying), and test
 * users written with @xmpp/client as ordinary clients.
 */
import { randomUUID } from 'node:crypto';
import { client, xml, type Client, type XmlElement } from '@xmpp/client';
import { nativeKey, type DeliveryResult, type IngestSink, type ReferenceIds } from '../../../src/core/adapter.js';
import type { EventDraft, LogEvent, Relations } from '../../../src/core/event.js';
import type { EventLog, SealedStore, StateStore } from '../../../src/core/ports.js';
import { convert } from '../../../src/bridge/format/index.js';
import { createXmppAdapter, parseXmppConfig, type CatchupStore, type XmppAdapter, type XmppCounters } from '../../../adapters/xmpp/index.js';
import { DEADLINE_MS, createAdapterGateway, until, type Gateway, type GatewayOptions } from '../../harness/adapter-gateway.js';
import type { XmppServer } from '../../harness/xmpp-server.js';

export { DEADLINE_MS, allEvents, until, type Gateway, type GatewayOptions } from '../../harness/adapter-gateway.js';

export const ADAPTER = 'xmpp';

/** A log with the real sink and links; `backend: 'redis'` uses the test Redis with `prefix` or a fresh one. */
export function createGateway(options: GatewayOptions = {}): Promise<Gateway> {
  return createAdapterGateway(options, 'xmpp');
}

export function makeAdapter(gw: Gateway, server: XmppServer, options: {
    config?: Record<string, unknown>;
    catchup?: CatchupStore;
    password?: string;
    jid?: string;
    sink?: IngestSink;
    service?: string;
    state?: StateStore;
    sealed?: (ns: string, secret: string) => SealedStore;
  } = {},): XmppAdapter {
  return createXmppAdapter({
    name: ADAPTER,
    config: parseXmppConfig({
      service: options.service ?? server.service,
      jid: options.jid ?? `bridge@${server.domain}`,
      password: options.password ?? 'bridge-secret',
      reconnect: { minMs: 100, maxMs: 1000 },
      deliveryTimeoutMs: 5000,
      iqTimeoutMs: 10_000,
      startTimeoutMs: 20_000,
      selfPingIntervalMs: 0,
      ...options.config,
    }),
    log: gw.logger,
    sink: options.sink ?? gw.sink,
    links: gw.links,
    ...(options.catchup ? { catchup: options.catchup } : {}),
    ...(options.state ? { state: options.state } : {}),
    ...(options.sealed ? { sealed: options.sealed } : {}),
  });
}

export function counters(adapter: XmppAdapter): XmppCounters {
  return adapter.status().detail?.['counters'] as XmppCounters;
}

export function dropped(adapter: XmppAdapter): Record<string, number> {
  return adapter.status().detail?.['dropped'] as Record<string, number>;
}

export function bodyOf(e: LogEvent | undefined): string | undefined {
  return e && 'content' in e ? e.content.body : undefined;
}

/** An event as the HTTP API would append it (sender Carol over the API). */
export async function apiPost(log: EventLog, draft: EventDraft): Promise<LogEvent> {
  const { eventId } = await log.append(draft);
  const event = await log.getEvent(draft.room, eventId);
  if (!event) throw new Error('appended event not found');
  return event;
}

let apiSeq = 0;
export function apiDraft(room: string, partial: Record<string, unknown>): EventDraft {
  apiSeq++;
  return {
    v: 1,
    idem: `api:dev1:${randomUUID()}`,
    room,
    sender: { uid: 'api:carol', proto: 'api', native: 'carol/dev1', display: 'Carol', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: { 'api.txnId': `t${apiSeq}` } },
    ts: { received: Date.now() },
    ...partial,
  } as unknown as EventDraft;
}

/**
 * What the delivery engine does around deliver(): references from the
 * target's own native ids (if it came from this adapter) or from what an
 * earlier delivery returned; the content in the adapter's text format; the
 * returned native ids recorded and aliased; retries until a final status.
 */
export async function deliver(gw: Gateway, adapter: XmppAdapter, event: LogEvent, timeoutMs = DEADLINE_MS): Promise<DeliveryResult> {
  const spec = await gw.log.rooms.get(event.room);
  const link = spec?.links.find((l) => l.endpoint === adapter.name);
  if (!link) throw new Error(`room ${event.room} has no ${adapter.name} link`);
  const references: ReferenceIds = {};
  const rel = ('rel' in event && event.rel ? event.rel : {}) as Relations;
  for (const [name, target] of Object.entries(rel) as Array<[keyof Relations, string | undefined]>) {
    if (!target) continue;
    const original = await gw.log.getEvent(event.room, target);
    if (!original) continue;
    const ids = original.origin.via === adapter.name ? original.origin.ids : await gw.log.delivery.deliveredIds(event.room, target, adapter.name);
    if (ids) references[name] = ids;
  }
  let content;
  if ('content' in event) {
    const { body, format, formatted, ...rest } = event.content;
    const c = convert({ body, ...(format ? { format } : {}), ...(formatted !== undefined ? { formatted } : {}) }, adapter.textFormat ?? 'plain', { isReply: event.kind === 'message' && event.rel?.replyTo !== undefined });
    content = { ...rest, body: c.body, ...(c.format ? { format: c.format } : {}), ...(c.formatted !== undefined ? { formatted: c.formatted } : {}) };
  }
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    const result = await adapter.deliver(event, { room: event.room, link }, { attempt, references, ...(content ? { content } : {}) });
    if (result.status === 'delivered') {
      if (Object.keys(result.nativeIds).length > 0) await gw.log.delivery.recordDelivery(event.room, event.eventId, adapter.name, result.nativeIds);
      const keys = Object.entries(result.nativeIds).map(([n, v]) => nativeKey('xmpp', n, v));
      if (keys.length > 0) await gw.log.alias(event.room, event.eventId, keys);
      return result;
    }
    if (result.status !== 'retry' || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, Math.min(result.afterMs ?? 200, 500)));
  }
}

// --- test users (ordinary @xmpp/client clients)

export const NS = {
  sid: 'urn:xmpp:sid:0',
  muc: 'http://jabber.org/protocol/muc',
  mucUser: 'http://jabber.org/protocol/muc#user',
  mam: 'urn:xmpp:mam:2',
  forward: 'urn:xmpp:forward:0',
  rsm: 'http://jabber.org/protocol/rsm',
  data: 'jabber:x:data',
  occupantId: 'urn:xmpp:occupant-id:0',
};

export class TestUser {
  readonly stanzas: XmlElement[] = [];
  readonly errors: Error[] = [];
  /** rooms this session is in (self-presence seen since the last connect) */
  readonly joined = new Set<string>();
  online = 0;
  private rooms = new Map<string, string>();
  private constructor(
    readonly xmpp: Client,
    readonly bare: string,
  ) {}

  static async login(server: XmppServer, localpart: string, password: string, resource = 'test'): Promise<TestUser> {
    const xmpp = client({ service: server.service, domain: server.domain, username: localpart, password, resource, timeout: 10_000 });
    const user = new TestUser(xmpp, `${localpart}@${server.domain}`);
    xmpp.on('stanza', (el) => {
      user.stanzas.push(el);
      if (el.is('presence') && el.attrs['type'] !== 'unavailable' && el.attrs['type'] !== 'error' && (el.getChild('x', NS.mucUser)?.getChildren('status') ?? []).some((st) => st.attrs['code'] === '110')) {
        user.joined.add((el.attrs['from'] ?? '').split('/')[0] ?? '');
      }
    });
    xmpp.on('disconnect', () => user.joined.clear());
    xmpp.on('error', (err) => user.errors.push(err));
    let ready: Promise<void> = Promise.resolve();
    xmpp.on('online', () => {
      user.online++;
      // Nothing goes out before XEP-0198 is enabled: a reply could otherwise arrive after
      // <enabled/> reset the library's counter, and Prosody closes the stream over the wrong 'h'.
      ready = (async () => {
        await until(() => xmpp.streamManagement.enabled || xmpp.status !== 'online', 'stream management enabled');
        // A new session: presence again, and the rooms again (occupancy does not survive it).
        await xmpp.send(xml('presence')).catch(() => undefined);
        if (user.online > 1) for (const [room, nick] of user.rooms) await user.sendJoin(room, nick).catch(() => undefined);
      })();
    });
    await xmpp.start();
    await ready;
    users.push(user);
    return user;
  }

  get connected(): boolean {
    return this.xmpp.status === 'online';
  }

  private sendJoin(room: string, nick: string): Promise<void> {
    return this.xmpp.send(xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: NS.muc }, xml('history', { maxstanzas: '0' }))));
  }

  /** Joins and waits for the self-presence (status 110); returns our occupant id. */
  async join(room: string, nick: string): Promise<string | undefined> {
    this.rooms.set(room, nick);
    const from = this.stanzas.length;
    await this.sendJoin(room, nick);
    const self = await this.waitFor(
      (s) => s.is('presence') && s.attrs['from'] === `${room}/${nick}` && (s.getChild('x', NS.mucUser)?.getChildren('status') ?? []).some((st) => st.attrs['code'] === '110'),
      `${this.bare} to join ${room}`,
      DEADLINE_MS,
      from,
    );
    return self.getChild('occupant-id', NS.occupantId)?.attrs['id'];
  }

  async leave(room: string): Promise<void> {
    const nick = this.rooms.get(room);
    this.rooms.delete(room);
    if (nick) await this.xmpp.send(xml('presence', { to: `${room}/${nick}`, type: 'unavailable' }));
  }

  /** Sends a groupchat message with id = origin-id; extra children as given. */
  async say(room: string, body: string | undefined, extra: XmlElement[] = [], id: string = randomUUID()): Promise<string> {
    await this.xmpp.send(xml('message', { to: room, type: 'groupchat', id }, body !== undefined ? xml('body', {}, body) : undefined, xml('origin-id', { xmlns: NS.sid, id }), ...extra));
    return id;
  }

  async chat(to: string, body: string | undefined, extra: XmlElement[] = [], id: string = randomUUID()): Promise<string> {
    await this.xmpp.send(xml('message', { to, type: 'chat', id }, body !== undefined ? xml('body', {}, body) : undefined, xml('origin-id', { xmlns: NS.sid, id }), ...extra));
    return id;
  }

  find(match: (s: XmlElement) => boolean, from = 0): XmlElement | undefined {
    for (let i = from; i < this.stanzas.length; i++) {
      const s = this.stanzas[i] as XmlElement;
      if (match(s)) return s;
    }
    return undefined;
  }

  count(match: (s: XmlElement) => boolean): number {
    return this.stanzas.filter(match).length;
  }

  async waitFor(match: (s: XmlElement) => boolean, what: string, timeoutMs = DEADLINE_MS, from = 0): Promise<XmlElement> {
    let found: XmlElement | undefined;
    await until(() => (found = this.find(match, from)) !== undefined, what, timeoutMs);
    return found as XmlElement;
  }

  /** The room's stanza-id of our message with this id, from its reflection. */
  async reflectionOf(room: string, id: string): Promise<string> {
    const r = await this.waitFor((s) => s.is('message') && s.attrs['id'] === id && s.attrs['from']?.startsWith(`${room}/`) === true, `the reflection of ${id}`);
    const sid = r.getChildren('stanza-id', NS.sid).find((s) => s.attrs['by'] === room)?.attrs['id'];
    if (!sid) throw new Error('reflection without stanza-id');
    return sid;
  }

  /** Every archived message of a room (as this user sees the archive). */
  roomArchive(room: string): Promise<Array<{ id: string; message: XmlElement }>> {
    return this.archive(room);
  }

  /** Every message of our own archive exchanged with `peer`. */
  accountArchive(peer: string): Promise<Array<{ id: string; message: XmlElement }>> {
    return this.archive(undefined, peer);
  }

  private async archive(to: string | undefined, withJid?: string): Promise<Array<{ id: string; message: XmlElement }>> {
    const out: Array<{ id: string; message: XmlElement }> = [];
    let after: string | undefined;
    for (;;) {
      const queryid = randomUUID();
      const from = this.stanzas.length;
      const reply = await this.xmpp.iqCaller.request(
        xml(
          'iq',
          { type: 'set', ...(to !== undefined ? { to } : {}) },
          xml(
            'query',
            { xmlns: NS.mam, queryid },
            withJid !== undefined
              ? xml('x', { xmlns: NS.data, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.mam)), xml('field', { var: 'with' }, xml('value', {}, withJid)))
              : undefined,
            xml('set', { xmlns: NS.rsm }, xml('max', {}, '200'), after !== undefined ? xml('after', {}, after) : undefined),
          ),
        ),
        DEADLINE_MS,
      );
      for (let i = from; i < this.stanzas.length; i++) {
        const result = this.stanzas[i]?.getChild('result', NS.mam);
        const message = result?.getChild('forwarded', NS.forward)?.getChild('message');
        if (result?.attrs['queryid'] === queryid && result.attrs['id'] && message) out.push({ id: result.attrs['id'], message });
      }
      const fin = reply.getChild('fin', NS.mam);
      const last = fin?.getChild('set', NS.rsm)?.getChildText('last');
      if (fin?.attrs['complete'] === 'true' || !last) return out;
      after = last;
    }
  }
}

const users: TestUser[] = [];

export async function endUsers(): Promise<void> {
  await Promise.all(users.splice(0).map((u) => u.xmpp.stop().catch(() => undefined)));
}

export { xml };
