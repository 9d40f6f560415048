// The adapter contract on the XMPP adapter against a real Prosody: a MUC
// linked to the room, an occupant as the native peer.
import { expect } from 'vitest';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { NS, TestUser, endUsers } from '../integration/xmpp/helpers.js';
import { adapterContract, until } from './adapter.contract.js';

let server: ProsodyServer;
let seq = 0;
const BRIDGE_PASSWORD = 'bridge-secret';

adapterContract({
  type: 'xmpp',
  async start() {
    server = await startProsody();
    await server.createUser('bridge', BRIDGE_PASSWORD);
    await server.createUser('alice', 'alice-secret');
  },
  stop: async () => server?.stop(),
  port: () => server.c2sPort,
  async world(room, proxy, log) {
    seq++;
    const muc = `contract-${process.pid}-${seq}@${server.mucDomain}`;
    const alice = await TestUser.login(server, 'alice', 'alice-secret', `contract-${seq}`);
    await alice.join(muc, 'alice');
    const fromBridge = () =>
      alice.stanzas.filter((s) => s.is('message') && s.attrs['type'] === 'groupchat' && s.attrs['from']?.startsWith(`${muc}/`) === true && s.attrs['from'] !== `${muc}/alice` && s.getChild('body') !== undefined);
    return {
      config: {
        service: proxy.url('xmpp'),
        domain: server.domain,
        jid: `bridge@${server.domain}`,
        password: BRIDGE_PASSWORD,
        reconnect: { minMs: 100, maxMs: 1000 },
        deliveryTimeoutMs: 5000,
        iqTimeoutMs: 10_000,
        startTimeoutMs: 20_000,
        selfPingIntervalMs: 0,
      },
      link: { endpoint: 'xmpp', target: muc },
      peer: {
        send: async (body) => void (await alice.say(muc, body)),
        // the relay prefix (`<display> `, relayPrefix) names the sender; the text follows it
        received: () => fromBridge().map((s) => ({ body: (s.getChildText('body') ?? '').replace(/^<[^>]*> /, ''), eventId: s.getChild('origin-id', NS.sid)?.attrs['id'] })),
      },
      // The MUC reflects every message to its sender: ours comes back on its own.
      echo: async (delivered) => {
        await until(() => fromBridge().some((s) => s.getChildText('body')?.endsWith('content' in delivered ? delivered.content.body : '\0') === true), 'the reflection in the room');
      },
      // A crash after the append but before the archive position was saved: a new
      // instance catches up from the older position and reads the message again.
      async sendTwice(body, harness) {
        const ns = 'xmpp-catchup:xmpp';
        const before = await log.state.entries(ns);
        expect(before.length).toBeGreaterThan(0);
        await alice.say(muc, body);
        await harness.untilLogged(body);
        await harness.restart(async () => {
          for (const [key, value] of before) await log.state.set(ns, key, value);
        });
        await until(() => harness.ingested(body) >= 2, 'the archived copy handed to the sink again');
      },
      async close() {
        await alice.leave(muc).catch(() => undefined);
        await endUsers();
      },
    };
  },
});
