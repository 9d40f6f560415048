// Stream ids are parsed by hand (once per entry read): the same strictness as the `^\d{1,16}-\d{1,16}$` it replaced.
import { describe, expect, it } from 'vitest';
import { parseStreamId, parseStreamIdBytes } from '../../src/core/position.js';

describe('parseStreamId', () => {
  it('reads ms and seq', () => {
    expect(parseStreamId('0-0')).toEqual({ ms: 0, seq: 0 });
    expect(parseStreamId('1795000000005-17')).toEqual({ ms: 1_795_000_000_005, seq: 17 });
    expect(parseStreamId('1234567890123456-1234567890123456')).toEqual({ ms: 1_234_567_890_123_456, seq: 1_234_567_890_123_456 });
  });

  it.each(['', '-', '1-', '-1', '1', '1-2-3', ' 1-2', '1-2 ', '1e3-0', '0x1-0', '1.5-0', '12345678901234567-0', '0-12345678901234567', 'a-b'])('refuses %j', (id) => {
    expect(() => parseStreamId(id)).toThrow(/not a stream id/);
    expect(() => parseStreamIdBytes(Buffer.from(id, 'latin1'))).toThrow(/not a stream id/);
  });

  it('reads the same from the id\'s bytes (a reply in Buffers)', () => {
    for (const id of ['0-0', '1795000000005-17', '1234567890123456-1234567890123456']) expect(parseStreamIdBytes(Buffer.from(id))).toEqual(parseStreamId(id));
  });
});
