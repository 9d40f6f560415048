// Nothing lost or out of order around the edges of a session, against a real
// Prosody and ejabberd with the adapter behind a TCP relay that can hold traffic: archives
// that were empty when the gateway first saw them (a restart, a kick), and a
// rejoin whose answer arrives in the same read as a live message.
// The tests run in order: each continues with the gateway the one before left.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XMPP_SERVERS, startXmppServer, type XmppServer } from '../../harness/xmpp-server.js';
import { startTcpRelay, type TcpRelay } from '../../harness/tcp-relay.js';
import { memoryCatchupStore, type XmppAdapter } from '../../../adapters/xmpp/index.js';
import { ADAPTER, TestUser, allEvents, bodyOf, createGateway, endUsers, makeAdapter, until, xml, type Gateway } from './helpers.js';

let server: XmppServer;
let relay: TcpRelay;
let gw: Gateway;
let alice: TestUser;
let bridgeJid: string;
const rooms = { empty: '', kicked: '', order: '' };
// New per server block: positions and adapters of one server mean nothing on the other.
let store = memoryCatchupStore();
const adapters: XmppAdapter[] = [];

async function start(): Promise<XmppAdapter> {
  const adapter = makeAdapter(gw, server, { catchup: store, service: relay.service });
  adapters.push(adapter);
  await adapter.start();
  return adapter;
}

async function bodies(roomId: string): Promise<string[]> {
  return (await allEvents(gw.log, [roomId])).map((e) => bodyOf(e) ?? '');
}

function firstSightLogs(archive: string): number {
  return gw.logLines.filter((l) => String(l['msg']).startsWith('archive seen for the first time') && l['archive'] === archive).length;
}

async function kick(room: string): Promise<void> {
  await alice.xmpp.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/muc#admin' }, xml('item', { nick: 'syncgate', role: 'none' }))), 10_000);
}

/** Alice posts and waits for the room to reflect each message (then it is archived and on its way to the bridge). */
async function post(room: string, texts: string[]): Promise<void> {
  for (const text of texts) {
    const id = await alice.say(room, text);
    await alice.reflectionOf(room, id);
  }
}

describe.each(XMPP_SERVERS)('on %s', (kind) => {
  beforeAll(async () => {
    store = memoryCatchupStore();
    adapters.length = 0;
    server = await startXmppServer(kind);
    relay = await startTcpRelay({ port: server.c2sPort });
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret')]);
    bridgeJid = `bridge@${server.domain}`;
    alice = await TestUser.login(server, 'alice', 'alice-secret');
    for (const key of Object.keys(rooms) as Array<keyof typeof rooms>) {
      rooms[key] = `${key}-${randomUUID().slice(0, 8)}@${server.mucDomain}`;
      await alice.join(rooms[key], 'Alice');
    }
    gw = await createGateway({
      rooms: [
        { id: 'empty', links: [{ endpoint: ADAPTER, target: rooms.empty }] },
        { id: 'kicked', links: [{ endpoint: ADAPTER, target: rooms.kicked }] },
        { id: 'order', links: [{ endpoint: ADAPTER, target: rooms.order }] },
        { id: 'dm', links: [{ endpoint: ADAPTER, target: `alice@${server.domain}`, options: { type: 'chat' } }] },
      ],
    });
  });

  afterAll(async () => {
    relay?.release('up');
    relay?.release('down');
    await Promise.all(adapters.map((a) => a.stop().catch(() => undefined)));
    await endUsers();
    await gw?.close();
    await relay?.close();
    await server?.stop();
  });

  describe('XMPP archives and rejoins', () => {
    it('a MUC and the account archive that were empty at first sight: everything posted while the gateway was stopped arrives after the next start', async () => {
      const first = await start();
      expect(first.status().ready).toBe(true);
      expect(firstSightLogs(rooms.empty)).toBe(1);
      expect(firstSightLogs(bridgeJid)).toBe(1);
      await first.stop();
      await alice.waitFor((s) => s.is('presence') && s.attrs['from'] === `${rooms.empty}/syncgate` && s.attrs['type'] === 'unavailable', 'the bridge to leave the room');

      const muc = Array.from({ length: 5 }, (_, i) => `empty-0${i + 1}`);
      const dm = Array.from({ length: 5 }, (_, i) => `dm-0${i + 1}`);
      await post(rooms.empty, muc);
      for (const text of dm) await alice.chat(bridgeJid, text);
      await until(() => alice.xmpp.streamManagement.outbound_q.length === 0, 'the server to acknowledge alice’s 1:1 messages');

      const second = await start();
      await until(async () => (await bodies('empty')).length === 5 && (await bodies('dm')).length === 5, 'the 5 room and 5 1:1 messages', 30_000);
      expect(await bodies('empty')).toEqual(muc);
      expect(await bodies('dm')).toEqual(dm);
      // Both came from the archives, from the position the first sight left, not as a new first sight.
      expect(firstSightLogs(rooms.empty)).toBe(1);
      expect(firstSightLogs(bridgeJid)).toBe(1);
      expect(second.status().ready).toBe(true);
    });

    it('kicked from a MUC still empty at first sight: what is posted while the gateway is out arrives after the rejoin', async () => {
      const adapter = adapters.at(-1) as XmppAdapter;
      expect(await bodies('kicked')).toEqual([]);
      // The rejoin waits in the relay until the messages are in the room.
      relay.hold('up');
      await kick(rooms.kicked);
      await until(() => relay.held('up').includes(`${rooms.kicked}/syncgate`), 'the bridge’s rejoin (held)');
      const missed = Array.from({ length: 5 }, (_, i) => `kicked-0${i + 1}`);
      await post(rooms.kicked, missed);
      relay.release('up');
      await until(async () => (await bodies('kicked')).length === 5, 'the 5 messages posted while out', 30_000);
      expect(await bodies('kicked')).toEqual(missed);
      expect(firstSightLogs(rooms.kicked)).toBe(1);
      await until(() => adapter.status().ready, 'the adapter ready again');
    });

    it('after a kick, a live message in the same read as the join answer comes after the missed ones', async () => {
      const adapter = adapters.at(-1) as XmppAdapter;
      // A message handled live leaves a position in this room's archive.
      await post(rooms.order, ['order-start']);
      await until(async () => (await bodies('order')).includes('order-start'), 'the room’s first message');
      relay.hold('up');
      await kick(rooms.order);
      await until(() => relay.held('up').includes(`${rooms.order}/syncgate`), 'the bridge’s rejoin (held)');
      const missed = Array.from({ length: 5 }, (_, i) => `order-0${i + 1}`);
      await post(rooms.order, missed);
      // The join goes through; its answer, and a live message after it, wait in the relay.
      relay.hold('down');
      const seen = alice.stanzas.length;
      relay.release('up');
      await alice.waitFor((s) => s.is('presence') && s.attrs['from'] === `${rooms.order}/syncgate` && s.attrs['type'] === undefined, 'the bridge back in the room', undefined, seen);
      await post(rooms.order, ['order-end']);
      await until(() => relay.held('down').includes('order-end'), 'the live message held with the join answer');
      relay.release('down');
      await until(async () => (await bodies('order')).length === 7, 'all 7 messages', 30_000);
      expect(await bodies('order')).toEqual(['order-start', ...missed, 'order-end']);
      await until(() => adapter.status().ready, 'the adapter ready again');
    });
  });
});
