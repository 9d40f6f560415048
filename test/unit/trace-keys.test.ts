import { describe, expect, it } from 'vitest';
import { traceKeys } from '../../src/core/adapter.js';
import { nativeKeys } from '../../src/bridge/ingest.js';

describe('trace keys', () => {
  it('index a native id as stored and, for a scoped one, the raw id after its scope', () => {
    expect(traceKeys(['$ev:matrix.example'])).toEqual(['trace:$ev:matrix.example']);
    expect(traceKeys(['room@muc.example/st-1'])).toEqual(['trace:room@muc.example/st-1', 'trace:st-1']);
    expect(traceKeys(['room@muc.example/n:bob/cl/9'])).toEqual(['trace:room@muc.example/n:bob/cl/9', 'trace:n:bob/cl/9', 'trace:cl/9']);
    expect(traceKeys(['', 'x'.repeat(513), 'a/'])).toEqual(['trace:a/']);
  });

  it('follow the native keys of an inbound draft, leaving out context ids', () => {
    const keys = nativeKeys({ origin: { proto: 'mqtt', via: 'mqtt', ids: { 'mqtt.topic': 'plant/a/alert', 'mqtt.msgid': 'm-1' } } }, ['mqtt.topic']);
    expect(keys).toEqual(['mqtt:mqtt.msgid:m-1', 'trace:m-1']);
  });
});
