/**
 * Scenarios both modes must pass, with the mode's own sender and its own
 * way of seeing echoes.
 */
import { expect } from 'vitest';
import { nativeKey } from '../../../src/core/adapter.js';
import type { LogEvent } from '../../../src/core/event.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { appendApi, Driver, matrixLink, messagesIn, roomEvents, ROOM, waitForEvents, type Env } from './helpers.js';

export interface ModeSpec {
  /** the Matrix user our HTTP events are sent as */
  readonly speaker: string;
  /** the expected Matrix body of an HTTP message `text` from Carol */
  readonly body: (text: string) => string;
  /** resolves once the adapter has seen `n` echoes of what it sent */
  readonly echoes: (n: number) => Promise<void>;
}

function byMatrixId(events: LogEvent[], mxId: string): LogEvent {
  const found = events.find((e) => e.origin.ids['mx.eventId'] === mxId);
  if (!found) throw new Error(`no log event for ${mxId}`);
  return found;
}

export function echoCount(adapter: MatrixAdapter): number {
  const inbound = adapter.status().detail?.['inbound'] as { echo: number } | undefined;
  return inbound?.echo ?? 0;
}

/** Plain messages one way and the other: once each, and nothing comes back in. */
export async function messagesBothWays(env: Env, adapter: MatrixAdapter, mode: ModeSpec): Promise<void> {
  const mxId = env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'hello from Matrix' });
  const [inbound] = await waitForEvents(env.log, (es) => es.length >= 1, 'the Matrix message in the log');
  expect(inbound).toMatchObject({
    kind: 'message',
    idem: `mx:${mxId}`,
    sender: { uid: 'matrix:@alice:fake.test', native: '@alice:fake.test', display: 'alice', proto: 'matrix', auth: 'server' },
    origin: { proto: 'matrix', via: 'matrix', ids: { 'mx.eventId': mxId } },
    content: { body: 'hello from Matrix' },
  });

  const driver = new Driver(adapter, env.log, matrixLink(env));
  const http = await appendApi(env.log, { kind: 'message', content: { body: 'hello from HTTP' } });
  const first = await driver.deliver(http);
  // A redelivery (the engine lost our answer) is a retransmission, not a second message.
  const again = await driver.deliver(http);
  expect(first).toEqual(again);
  expect(first.status).toBe('delivered');
  const sentId = first.status === 'delivered' ? first.nativeIds['mx.eventId'] : undefined;

  await mode.echoes(1);
  const inRoom = messagesIn(env).filter((e) => e.type === 'm.room.message');
  expect(inRoom.map((e) => [e.sender, e.content['body']])).toEqual([
    ['@alice:fake.test', 'hello from Matrix'],
    [mode.speaker, mode.body('hello from HTTP')],
  ]);
  const ours = inRoom[1];
  expect(ours?.event_id).toBe(sentId);
  expect(ours?.txn).toBe(http.eventId);
  expect(ours?.content['org.syncgate.event_id']).toBe(http.eventId);

  // Not back in: the log holds the two messages once each, and the echo named our event.
  const events = await roomEvents(env.log);
  expect(events.map((e) => e.kind === 'message' && e.content.body)).toEqual(['hello from Matrix', 'hello from HTTP']);
  expect(await env.log.resolve(ROOM, nativeKey('matrix', 'mx.eventId', sentId ?? ''))).toBe(http.eventId);
}

/** Replies, edits, reactions added and removed, redactions and read receipts, both ways. */
export async function relationsBothWays(env: Env, adapter: MatrixAdapter, mode: ModeSpec): Promise<void> {
  const { hs, alice, bob, roomId } = env;
  const text = (body: string) => ({ msgtype: 'm.text', body });
  const m1 = hs.sendAsUser(alice.userId, roomId, 'm.room.message', text('original'));
  const m2 = hs.sendAsUser(alice.userId, roomId, 'm.room.message', text('to be retracted'));
  const reply = hs.sendAsUser(bob.userId, roomId, 'm.room.message', {
    ...text('> <@alice:fake.test> original\n\nmy reply'),
    'm.relates_to': { 'm.in_reply_to': { event_id: m1 } },
  });
  hs.sendAsUser(alice.userId, roomId, 'm.room.message', { ...text('* edited'), 'm.new_content': text('edited'), 'm.relates_to': { rel_type: 'm.replace', event_id: m1 } });
  const thumbs = hs.sendAsUser(bob.userId, roomId, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: m1, key: '👍' } });
  hs.sendAsUser(bob.userId, roomId, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: m1, key: '❤️' } });
  const count = (es: LogEvent[], kind: LogEvent['kind']) => es.filter((e) => e.kind === kind).length;
  // Live traffic: the redactions come after the bridge saw their targets (an event redacted before it is
  // pushed arrives without content and is not bridged at all).
  await waitForEvents(env.log, (es) => count(es, 'message') === 3 && count(es, 'reaction') === 2 && count(es, 'edit') === 1, 'the Matrix messages in the log');
  hs.redactAsUser(bob.userId, roomId, thumbs);
  hs.redactAsUser(bob.userId, roomId, m2, 'moderated');
  hs.sendReceiptAsUser(bob.userId, roomId, m1, 'm.read');
  hs.sendReceiptAsUser(alice.userId, roomId, m2, 'm.read.private');

  const events = await waitForEvents(
    env.log,
    (es) => count(es, 'message') === 3 && count(es, 'edit') === 1 && count(es, 'reaction') === 3 && count(es, 'retraction') === 1 && count(es, 'marker') === 1,
    'the Matrix relations in the log',
  );
  const e1 = byMatrixId(events, m1);
  const e2 = byMatrixId(events, m2);
  const eReply = byMatrixId(events, reply);
  expect(eReply).toMatchObject({ kind: 'message', content: { body: 'my reply' }, rel: { replyTo: e1.eventId } });
  expect(events.find((e) => e.kind === 'edit')).toMatchObject({ rel: { replaces: e1.eventId }, content: { body: 'edited' }, sender: { native: alice.userId } });
  const reactions = events.filter((e) => e.kind === 'reaction');
  expect(reactions.map((e) => e.kind === 'reaction' && [e.rel.reactsTo, e.reaction.keys, e.sender.native])).toEqual([
    [e1.eventId, ['👍'], bob.userId],
    [e1.eventId, ['👍', '❤️'], bob.userId],
    [e1.eventId, ['❤️'], bob.userId],
  ]);
  expect(events.find((e) => e.kind === 'retraction')).toMatchObject({ rel: { redacts: e2.eventId }, sender: { native: bob.userId } });
  expect(events.find((e) => e.kind === 'marker')).toMatchObject({ rel: { upTo: e1.eventId }, sender: { native: bob.userId } });

  // ---- log → Matrix
  const driver = new Driver(adapter, env.log, matrixLink(env));
  const sent = (r: Awaited<ReturnType<Driver['deliver']>>) => {
    expect(r.status).toBe('delivered');
    return r.status === 'delivered' ? r.nativeIds : {};
  };
  const h1 = await appendApi(env.log, { kind: 'message', content: { body: 'from HTTP' } });
  const x1 = sent(await driver.deliver(h1))['mx.eventId'];
  const hReply = await appendApi(env.log, { kind: 'message', content: { body: 're: original' }, rel: { replyTo: e1.eventId } });
  const xReply = sent(await driver.deliver(hReply))['mx.eventId'];
  // Read now: the retraction below strips the relation (room v11 redaction).
  const replyContent = hs.events(roomId).find((e) => e.event_id === xReply)?.content;
  expect(replyContent?.['m.relates_to']).toEqual({ 'm.in_reply_to': { event_id: m1 } });
  const hEdit = await appendApi(env.log, { kind: 'edit', content: { body: 'from HTTP, edited' }, rel: { replaces: h1.eventId } });
  const xEdit = sent(await driver.deliver(hEdit))['mx.eventId'];
  const hReact = await appendApi(env.log, { kind: 'reaction', rel: { reactsTo: e1.eventId }, reaction: { keys: ['🎉', '👀'] } });
  const reactIds = sent(await driver.deliver(hReact));
  const hUnreact = await appendApi(env.log, { kind: 'reaction', rel: { reactsTo: e1.eventId }, reaction: { keys: ['👀'] } });
  sent(await driver.deliver(hUnreact));
  const hRetract = await appendApi(env.log, { kind: 'retraction', rel: { redacts: hReply.eventId } });
  sent(await driver.deliver(hRetract));
  const hMarker = await appendApi(env.log, { kind: 'marker', rel: { upTo: e1.eventId } });
  sent(await driver.deliver(hMarker));

  const all = hs.events(roomId, { includeTransactionIds: true });
  const get = (id: string | undefined) => {
    const e = all.find((x) => x.event_id === id);
    if (!e) throw new Error(`no Matrix event ${id}`);
    return e;
  };
  expect(get(xReply).unsigned['redacted_because']).toBeDefined();
  expect(get(xEdit)).toMatchObject({ sender: mode.speaker, content: { 'm.relates_to': { rel_type: 'm.replace', event_id: x1 }, 'm.new_content': { body: mode.body('from HTTP, edited') } } });
  const annotations = all.filter((e) => e.type === 'm.reaction' && e.sender === mode.speaker);
  expect(annotations.map((e) => e.event_id).sort()).toEqual([reactIds['mx.annotation.🎉'], reactIds['mx.annotation.👀']].sort());
  const live = annotations.filter((e) => e.unsigned['redacted_because'] === undefined).map((e) => e.content['m.relates_to']);
  expect(live).toEqual([{ rel_type: 'm.annotation', event_id: m1, key: '👀' }]);
  const redactions = all.filter((e) => e.type === 'm.room.redaction' && e.sender === mode.speaker);
  expect(redactions.map((e) => e.content['redacts']).sort()).toEqual([reactIds['mx.annotation.🎉'], xReply].sort());
  const receipts = hs.requests().filter((r) => r.method === 'POST' && r.path.includes('/receipt/m.read/') && r.status === 200);
  expect(receipts.map((r) => [r.userId, decodeURIComponent(r.path.split('/').pop() ?? '')])).toEqual([[mode.speaker, m1]]);

  // What we sent comes back as echoes (message, reply, edit, 2 annotations, 2 redactions) and appends nothing.
  const before = (await roomEvents(env.log)).length;
  await mode.echoes(7);
  const after = await roomEvents(env.log);
  expect(after.length).toBe(before);
  expect(after.filter((e) => e.origin.via === 'matrix' && e.sender.native === mode.speaker)).toEqual([]);
  expect(await env.log.resolve(ROOM, nativeKey('matrix', 'mx.eventId', xEdit ?? ''))).toBe(hEdit.eventId);
}
