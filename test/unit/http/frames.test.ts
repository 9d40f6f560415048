import { describe, expect, it } from 'vitest';
import * as wsModule from 'ws';
import type { LogEvent } from '../../../src/core/event.js';
import { FrameCache, frameText, joinFrames, wsPayloadOf, wsTextFrame } from '../../../src/http/frames.js';
import { ViewCache } from '../../../src/http/view.js';

function event(body: string, ids: Record<string, string> = {}): LogEvent {
  return {
    v: 1,
    kind: 'message',
    idem: 'api:d1:t-42',
    room: 'ops',
    sender: { uid: 'alice', proto: 'api', native: 'alice', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids },
    ts: { received: 1 },
    content: { body },
    eventId: '01M80G7TVM030000000',
    cursor: 'AgQD9NaPiKA0ANrvYL8',
  };
}

/** ws's frame parser (exported by the package, not by its type declarations). */
interface FrameReceiver {
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void;
  write(chunk: Buffer): void;
}
const { Receiver } = wsModule as unknown as { Receiver: new (options: { isServer: boolean }) => FrameReceiver };

/** Messages as a WebSocket client (ws's own parser) reads them from the bytes. */
function parse(bytes: Buffer): string[] {
  const out: string[] = [];
  const receiver = new Receiver({ isServer: false });
  receiver.on('message', (data: Buffer, isBinary: boolean) => {
    expect(isBinary).toBe(false);
    out.push(data.toString('utf8'));
  });
  receiver.write(bytes);
  return out;
}

describe('live stream frames', () => {
  it('builds WebSocket text frames a client parses back, for each length encoding', () => {
    for (const length of [0, 125, 126, 65_535, 65_536, 70_000]) {
      const text = 'é'.repeat(Math.floor(length / 2)) + 'x'.repeat(length % 2);
      const frame = wsTextFrame(text);
      expect(parse(frame)).toEqual([text]);
      expect(wsPayloadOf(frame).toString('utf8')).toBe(text);
    }
  });

  it('keeps the stream formats: ready, event and limited, for WebSocket and SSE', () => {
    expect(frameText('ws', 'ready', 'N1')).toBe('{"type":"ready","next":"N1"}');
    expect(frameText('ws', 'limited', 'N1')).toBe('{"type":"limited","next":"N1"}');
    expect(frameText('ws', 'event', 'N1', '{"a":1}')).toBe('{"type":"event","next":"N1","event":{"a":1}}');
    expect(frameText('sse', 'ready', 'N1')).toBe('event: ready\nid: N1\ndata: {"next":"N1"}\n\n');
    expect(frameText('sse', 'limited', 'N1')).toBe('event: limited\nid: N1\ndata: {"next":"N1"}\n\n');
    expect(frameText('sse', 'event', 'N1', '{"a":1}')).toBe('id: N1\ndata: {"a":1}\n\n');
  });

  it('shares one frame among devices with the same cursor; the sending device gets its own with its txnId', () => {
    const frames = new FrameCache(new ViewCache());
    const e = event('hello', { 'api.txnId': 't-42', 'api.device': 'd1' });
    const a = frames.event('ws', e, 'N1', 'd2');
    expect(frames.event('ws', e, 'N1', 'd3')).toBe(a);
    const [text] = parse(a);
    expect(JSON.parse(text ?? '')).toMatchObject({ type: 'event', next: 'N1', event: { eventId: e.eventId, content: { body: 'hello' } } });
    expect(text).not.toContain('t-42');

    const mine = frames.event('ws', e, 'N1', 'd1');
    expect(mine).not.toBe(a);
    expect(JSON.parse(parse(mine)[0] ?? '')).toMatchObject({ event: { unsigned: { txnId: 't-42' } } });

    // another cursor, another frame; SSE frames are their own
    const other = frames.event('ws', e, 'N2', 'd2');
    expect(JSON.parse(parse(other)[0] ?? '')).toMatchObject({ next: 'N2' });
    const sse = frames.event('sse', e, 'N2', 'd2').toString('utf8');
    expect(sse.startsWith('id: N2\ndata: {')).toBe(true);
    expect(frames.limited('sse', 'N3').toString('utf8')).toBe('event: limited\nid: N3\ndata: {"next":"N3"}\n\n');
  });

  it('joins a tick of frames once for every client that queued the same frames', () => {
    const one = wsTextFrame('{"n":1}');
    const two = wsTextFrame('{"n":2}');
    const joined = joinFrames([one, two]);
    expect(parse(joined)).toEqual(['{"n":1}', '{"n":2}']);
    expect(joinFrames([one, two])).toBe(joined);
    expect(joinFrames([one])).toBe(one);
    const differs = joinFrames([one, wsTextFrame('{"n":2}')]);
    expect(differs).not.toBe(joined);
    expect(parse(differs)).toEqual(['{"n":1}', '{"n":2}']);
  });
});
