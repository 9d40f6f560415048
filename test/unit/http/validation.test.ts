import { describe, expect, it } from 'vitest';
import { EventView, MessagesQuery, SendBody, SyncQuery } from '../../../src/http/schemas.js';
import { checker } from '../../../src/http/validation.js';

describe('request validation', () => {
  it('converts and defaults query strings', () => {
    const check = checker(SyncQuery, true);
    expect(check({ limit: '20', timeout: '500', since: 'abc' })).toEqual({ value: { limit: 20, timeout: 500, since: 'abc' } });
    expect(check({})).toEqual({ value: { limit: 100, timeout: 0 } });
    expect(check(null)).toEqual({ value: { limit: 100, timeout: 0 } });
    expect(check({ limit: 'many' }).error?.[0]?.instancePath).toBe('/limit');
    expect(check({ limit: '0' }).error).toBeDefined();
    expect(checker(MessagesQuery, true)({ dir: 'sideways' }).error?.[0]?.instancePath).toBe('/dir');
  });

  it('checks bodies exactly: no coercion, no extra properties', () => {
    const check = checker(SendBody, false);
    expect(check({ kind: 'message', content: { body: 'hi' } }).error).toBeUndefined();
    expect(check({ kind: 'message', content: { body: 42 } }).error?.[0]).toMatchObject({ instancePath: '/content/body' });
    expect(check({ kind: 'message', content: { body: 'hi' }, extra: 1 }).error).toBeDefined();
    expect(check({ kind: 'message', content: { body: 'hi', format: 'rtf', formatted: 'x' } }).error?.[0]?.instancePath).toBe('/content/format');
  });

  it('shows a message marked undecryptable, but lets only adapters mark one, not devices', () => {
    const marked = { body: '[An encrypted message could not be read]', undecryptable: { reason: 'omemo' } };
    const view = { eventId: '01M80G7TVM030000000', cursor: 'AgQD9NaPiKA0ANrvYL8', kind: 'message', room: 'ops', sender: {}, origin: {}, ts: {}, content: marked };
    expect(checker(EventView, false)(view).error).toBeUndefined();
    const check = checker(SendBody, false);
    expect(check({ kind: 'message', content: marked }).error).toBeDefined();
    expect(check({ kind: 'edit', content: marked, rel: { replaces: 'e1' } }).error).toBeDefined();
  });

  it('names the problem in the variant the kind selects', () => {
    const check = checker(SendBody, false);
    expect(check({ kind: 'edit', content: { body: 'x' } }).error?.map((e) => e.instancePath)).toContain('/rel');
    expect(check({ kind: 'reaction', rel: { reactsTo: 'e1' }, reaction: { keys: ['a', 'a'] } }).error?.[0]?.instancePath).toBe('/reaction/keys');
    expect(check({ kind: 'typing' }).error).toEqual([expect.objectContaining({ instancePath: '/kind', message: 'must be one of message, edit, retraction, reaction' })]);
    expect(check('text').error?.[0]?.instancePath).toBe('/kind');
  });
});
