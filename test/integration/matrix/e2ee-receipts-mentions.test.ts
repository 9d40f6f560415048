/**
 * Read receipts and mentions in an encrypted room behave as in a clear one,
 * in both modes: receipts are EDUs, never encrypted (m.receipt in /sync or
 * the transaction in; POST /receipt out), on the encrypted events' ids;
 * mentions (`m.mentions` and the formatted body's pills) travel inside the
 * Megolm payload — nothing of them in clear on the m.room.encrypted event.
 * The member is the independent Rust-crypto peer (test/harness/matrix-e2ee-peer.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import { encryptedRoom, type E2eeMode, type EncryptedRoom } from './e2ee-room.js';
import { appendApi, Driver, matrixLink, waitForEvents } from './helpers.js';

const rooms: EncryptedRoom[] = [];

afterEach(async () => {
  for (const r of rooms.splice(0)) await r.close();
});

async function setup(mode: E2eeMode): Promise<EncryptedRoom> {
  const r = await encryptedRoom(mode);
  rooms.push(r);
  return r;
}

describe.each(['bot', 'appservice'] as const)('Matrix adapter, %s mode: receipts and mentions in an encrypted room', (mode) => {
  it('a member\'s read receipt on an encrypted event becomes a marker; a marker from elsewhere goes out as an m.read receipt on the encrypted event, nothing encrypted for it; a receipt on what the bridge relayed marks up to the relayed event', async () => {
    const r = await setup(mode);
    const { env, peer } = r;
    const m1 = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'read me' });
    const bridged = await waitForEvents(env.log, (evs) => evs.some((e) => e.origin.ids['mx.eventId'] === m1), 'the encrypted message bridged');
    const e1 = bridged.find((e) => e.origin.ids['mx.eventId'] === m1);
    if (!e1) throw new Error('not bridged');

    env.hs.sendReceiptAsUser(env.bob.userId, env.roomId, m1, 'm.read');
    env.hs.sendReceiptAsUser(env.alice.userId, env.roomId, m1, 'm.read.private');
    const withMarker = await waitForEvents(env.log, (evs) => evs.some((e) => e.kind === 'marker'), 'the marker from the receipt on the encrypted event');
    const markers = withMarker.filter((e) => e.kind === 'marker');
    expect(markers).toHaveLength(1);
    expect(markers[0]).toMatchObject({ rel: { upTo: e1.eventId }, sender: { native: env.bob.userId } });

    const encryptedBefore = env.hs.events(env.roomId).filter((e) => e.type === 'm.room.encrypted').length;
    const marker = await appendApi(env.log, { kind: 'marker', rel: { upTo: e1.eventId } });
    expect((await new Driver(r.adapter, env.log, matrixLink(env)).deliver(marker)).status).toBe('delivered');
    const receipts = env.hs.requests().filter((q) => q.method === 'POST' && q.path.includes('/receipt/m.read/') && q.status === 200);
    expect(receipts.map((q) => decodeURIComponent(q.path.split('/').pop() ?? ''))).toEqual([m1]);
    expect(env.hs.events(env.roomId).filter((e) => e.type === 'm.room.encrypted')).toHaveLength(encryptedBefore);

    // The member reads what the bridge relayed (an encrypted event of ours): a marker up to the relayed event.
    const out = await appendApi(env.log, { kind: 'message', content: { body: 'relayed, then read' } });
    const delivered = await new Driver(r.adapter, env.log, matrixLink(env)).deliver(out);
    const x1 = delivered.status === 'delivered' ? delivered.nativeIds['mx.eventId'] : undefined;
    if (x1 === undefined) throw new Error(`not delivered: ${JSON.stringify(delivered)}`);
    expect((await peer.waitFor((m) => m.eventId === x1)).error).toBeUndefined();
    env.hs.sendReceiptAsUser(env.alice.userId, env.roomId, x1, 'm.read');
    const fromAlice = (evs: LogEvent[]): LogEvent[] => evs.filter((e) => e.kind === 'marker' && e.sender.native === env.alice.userId);
    const later = await waitForEvents(env.log, (evs) => fromAlice(evs).length > 0, 'the marker from the receipt on our encrypted event');
    expect(fromAlice(later)).toMatchObject([{ rel: { upTo: out.eventId } }]);
  });

  it('mentions inside the Megolm payload both ways: a member\'s m.mentions and pills come in as mentions; ours go out as m.mentions with a pill, encrypted', async () => {
    const r = await setup(mode);
    const { env, peer } = r;
    const bob = env.bob.userId;
    const pill = `<a href="https://matrix.to/#/${bob}">bob</a>: see this`;
    const intentional = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'bob: see this', format: 'org.matrix.custom.html', formatted_body: pill, 'm.mentions': { user_ids: [bob] } });
    // An older client: a pill only, no m.mentions.
    const pillOnly = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'bob: and this', format: 'org.matrix.custom.html', formatted_body: `<a href="https://matrix.to/#/${bob}">bob</a>: and this` });
    const events = await waitForEvents(env.log, (evs) => [intentional, pillOnly].every((id) => evs.some((e) => e.origin.ids['mx.eventId'] === id)), 'both mentions bridged');
    for (const id of [intentional, pillOnly]) {
      const e = events.find((x) => x.origin.ids['mx.eventId'] === id);
      expect(e?.kind === 'message' ? e.content.mentions : undefined).toEqual([`matrix:${bob}`]);
    }

    const alice = env.alice.userId;
    const out = await appendApi(env.log, { kind: 'message', content: { body: `ask ${alice}`, format: 'markdown', formatted: `ask **${alice}**`, mentions: [`matrix:${alice}`] } });
    const delivered = await new Driver(r.adapter, env.log, matrixLink(env)).deliver(out);
    expect(delivered.status).toBe('delivered');
    const mx = delivered.status === 'delivered' ? delivered.nativeIds['mx.eventId'] : undefined;
    const sent = env.hs.events(env.roomId).find((e) => e.event_id === mx);
    expect(sent?.type).toBe('m.room.encrypted');
    // Nothing of the mention in clear: no m.mentions, no user id, no HTML on the encrypted event.
    expect(sent?.content['m.mentions']).toBeUndefined();
    expect(JSON.stringify(sent?.content)).not.toContain(alice);
    const got = await peer.waitFor((m) => m.eventId === mx);
    expect(got.error).toBeUndefined();
    expect(got.content?.['m.mentions']).toEqual({ user_ids: [alice] });
    expect(String(got.content?.['formatted_body'])).toContain(`<a href="https://matrix.to/#/${alice}">${alice}</a>`);
  });
});
