/**
 * The component's connection under the adapter lease (issue 16, point 1):
 * two replicas on one Redis, one holds the component; the holder crashes
 * (connection dropped, no goodbye) and the other takes over; occupants
 * rejoin when the room tells them they are not in it, and MAM goes on from
 * the stanza-id they hold: no event lost or doubled. Then Prosody restarts
 * and the component reconnects by itself.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { XmppRoomsAdapter } from '../../../adapters/xmpp-rooms/index.js';
import { startProsody, type ProsodyServer } from '../../harness/prosody.js';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { testPrefix } from '../../harness/redis.js';
import { TestUser, endUsers, until, xml, DEADLINE_MS } from '../xmpp/helpers.js';

const SECRET = `s-${randomUUID()}`;
const SID = 'urn:xmpp:sid:0';
const MAM = 'urn:xmpp:mam:2';
const RSM = 'http://jabber.org/protocol/rsm';
const DATA = 'jabber:x:data';

let prosody: ProsodyServer;
const gateways: TestGateway[] = [];
let room: string;

async function startReplica(prefix: string): Promise<TestGateway> {
  if (!prosody.component) throw new Error('no component');
  const gw = await startGateway({
    redisUrl: inject('redisUrl'),
    prefix,
    config: {
      adapters: {
        rooms: { type: 'xmpp-rooms', service: prosody.component.service, domain: prosody.component.domain, secret: SECRET, reconnect: { minMs: 100, maxMs: 1000 }, access: [{ domain: prosody.domain, user: 'staff' }] },
      },
      rooms: [{ id: 'ops', links: [{ endpoint: 'rooms', target: 'ops' }] }],
    },
  });
  gateways.push(gw);
  return gw;
}

const state = async (gw: TestGateway) => (await gw.gateway.status()).adapters['rooms'];

async function archiveAfter(user: TestUser, after: string): Promise<Array<{ id: string; body: string }>> {
  const queryid = randomUUID();
  const from = user.stanzas.length;
  await user.xmpp.iqCaller.request(
    xml(
      'iq',
      { type: 'set', to: room },
      xml(
        'query',
        { xmlns: MAM, queryid },
        xml('x', { xmlns: DATA, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, MAM)), xml('field', { var: 'after-id' }, xml('value', {}, after))),
        xml('set', { xmlns: RSM }, xml('max', {}, '100')),
      ),
    ),
    DEADLINE_MS,
  );
  return user.stanzas
    .slice(from)
    .map((s) => s.getChild('result', MAM))
    .filter((r) => r?.attrs['queryid'] === queryid)
    .map((r) => ({ id: r?.attrs['id'] ?? '', body: r?.getChild('forwarded', 'urn:xmpp:forward:0')?.getChild('message')?.getChildText('body') ?? '' }));
}

beforeAll(async () => {
  prosody = await startProsody({ component: { secret: SECRET } });
  room = `ops@${prosody.component?.domain ?? ''}`;
  await prosody.createUser('alice', 'alice-pw');
}, 60_000);

afterAll(async () => {
  await endUsers();
  for (const gw of gateways) await gw.stop().catch(() => undefined);
  await prosody?.stop();
});

describe('xmpp-rooms: lease, crash and reconnect', () => {
  it('one replica holds the component; after it crashes the other takes over, occupants rejoin, MAM continues with nothing lost or doubled', async () => {
    const prefix = testPrefix('rooms-failover');
    const a = await startReplica(prefix);
    const b = await startReplica(prefix);
    const [gwA, gwB] = [a, b];
    await until(async () => (await state(gwA))?.connected === true, 'replica A connected');
    expect((await state(gwA))?.state).toBe('active');
    expect((await state(gwB))?.state).toBe('standby');
    expect((await state(gwB))?.connected).toBe(false);
    const carol = await gwA.deviceToken('carol', ['ops']);
    await gwA.deviceToken('staff', ['ops']);

    const alice = await TestUser.login(prosody, 'alice', 'alice-pw', 'phone');
    await alice.join(room, 'alice');
    const id = randomUUID();
    const from = alice.stanzas.length;
    await alice.say(room, 'before the crash', [], id);
    const reflection = await alice.waitFor((s) => s.is('message') && s.attrs['id'] === id, 'reflection', DEADLINE_MS, from);
    const held = reflection.getChildren('stanza-id', SID)[0]?.attrs['id'] ?? '';
    expect(held).not.toBe('');

    // A crashes: its component connection drops without a goodbye, then its process is gone
    const adapterA = gwA.gateway.adapters.find((x) => x.name === 'rooms') as XmppRoomsAdapter;
    adapterA.abort();
    await gwA.stop();
    await until(async () => (await state(gwB))?.connected === true, 'replica B holds the component', 30_000);

    const sent: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await gwB.device<{ eventId: string }>(carol, 'PUT', `/v1/rooms/ops/send/${randomUUID()}`, { kind: 'message', content: { body: `while away ${i}` } });
      expect(r.status).toBe(200);
      sent.push(r.body.eventId);
    }
    // The new holder knows no occupants: a self-ping says "not in the room", and Alice rejoins
    const ping = await alice.xmpp.iqCaller.request(xml('iq', { type: 'get', to: `${room}/alice` }, xml('ping', { xmlns: 'urn:xmpp:ping' })), DEADLINE_MS).then(
      () => 'joined',
      (err: { condition?: string }) => err.condition,
    );
    expect(ping).toBe('not-acceptable');
    await alice.join(room, 'alice');
    const missed = await archiveAfter(alice, held);
    expect(missed.map((m) => m.id)).toEqual(sent);
    expect(missed.map((m) => m.body)).toEqual(['while away 0', 'while away 1', 'while away 2']);
    // and the message before the crash is in the log once
    const sync = await gwB.device<{ events: Array<{ eventId: string }> }>(carol, 'GET', '/v1/sync?limit=100&timeout=0');
    expect(sync.body.events.filter((e) => e.eventId === held)).toHaveLength(1);
  }, 90_000);

  it('reconnects by itself when Prosody restarts', async () => {
    const gw = gateways.at(-1) as TestGateway;
    const before = (await state(gw))?.detail['sessions'] as number;
    await prosody.restart();
    await until(async () => {
      const s = await state(gw);
      return s?.connected === true && (s.detail['sessions'] as number) > before;
    }, 'the component to reconnect', 30_000);
    const alice = await TestUser.login(prosody, 'alice', 'alice-pw', 'after-restart');
    await alice.join(room, 'alice');
    const id = randomUUID();
    const from = alice.stanzas.length;
    await alice.say(room, 'after the restart', [], id);
    await alice.waitFor((s) => s.is('message') && s.attrs['id'] === id && s.getChildren('stanza-id', SID).length === 1, 'reflection after restart', DEADLINE_MS, from);
  }, 60_000);
});
