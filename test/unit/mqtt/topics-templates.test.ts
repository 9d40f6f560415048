import { describe, expect, it } from 'vitest';
import Mustache from 'mustache';
import { compileTemplate } from '../../../adapters/mqtt/template.js';
import { isPublishableTopic, parseNamedFilter, subscriptionIdFor } from '../../../adapters/mqtt/topics.js';

describe('named topic filters', () => {
  it('subscribes with plain wildcards and returns the named segments', () => {
    const f = parseNamedFilter('sensors/+device/alert');
    expect(f.plain).toBe('sensors/+/alert');
    expect(f.names).toEqual(['device']);
    expect(f.match('sensors/pump-7/alert')).toEqual({ device: 'pump-7' });
    expect(f.match('sensors/pump-7/other')).toBeUndefined();
    expect(f.match('sensors/pump-7/alert/more')).toBeUndefined();
    expect(f.match('sensors/alert')).toBeUndefined();
  });

  it('supports anonymous and multi-level wildcards (# also matches the parent level)', () => {
    const f = parseNamedFilter('devices/+device/+/#rest');
    expect(f.plain).toBe('devices/+/+/#');
    expect(f.match('devices/d1/x/a/b')).toEqual({ device: 'd1', rest: 'a/b' });
    expect(f.match('devices/d1/x')).toEqual({ device: 'd1', rest: '' });
    expect(parseNamedFilter('#').match('any/thing')).toEqual({});
  });

  it('does not match $ topics with a leading wildcard (MQTT 5 §4.7.2)', () => {
    expect(parseNamedFilter('+x/status').match('$SYS/status')).toBeUndefined();
    expect(parseNamedFilter('#').match('$SYS/broker')).toBeUndefined();
    expect(parseNamedFilter('$SYS/#').match('$SYS/broker')).toEqual({});
  });

  it('matches empty levels like MQTT does', () => {
    expect(parseNamedFilter('a/+x/b').match('a//b')).toEqual({ x: '' });
  });

  it.each([
    ['', 'empty'],
    ['a/#/b', 'last level'],
    ['a/b+/c', 'mixes'],
    ['a/+1x/c', 'identifier'],
    ['a/+x/+x', 'twice'],
    ['$share/g/a/b', 'shared'],
  ])('refuses %j (%s)', (source, why) => {
    expect(() => parseNamedFilter(source)).toThrow(why);
  });

  it('derives stable subscription identifiers in the MQTT range', () => {
    const a = subscriptionIdFor('sensors/+/alert');
    expect(a).toBe(subscriptionIdFor('sensors/+/alert'));
    expect(a).not.toBe(subscriptionIdFor('sensors/+/temp'));
    for (const f of ['a', '#', 'x/y/z', '+/+/+']) {
      const id = subscriptionIdFor(f);
      expect(id).toBeGreaterThanOrEqual(1);
      expect(id).toBeLessThanOrEqual(268_435_455);
    }
  });

  it('knows publishable topics', () => {
    expect(isPublishableTopic('a/b')).toBe(true);
    expect(isPublishableTopic('a/+')).toBe(false);
    expect(isPublishableTopic('a/#')).toBe(false);
    expect(isPublishableTopic('')).toBe(false);
  });
});

describe('templates', () => {
  it('renders text-and-name templates (its own fast path) exactly as mustache does', () => {
    const toText = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));
    const views: Array<Record<string, unknown>> = [
      { a: '<i>&"', b: { c: 1.5, d: [1, 'x'] }, n: 'n', f: false, z: 0, u: '🚀 é' },
      { a: 42, b: { c: { deep: true }, d: 'd' }, n: 'set', f: true, z: -1, u: '' },
      Object.assign(Object.create(null) as Record<string, unknown>, { a: 'null-proto', b: { c: 'x', d: 'y' }, n: 0, f: '', z: [], u: {} }),
    ];
    for (const source of ['{{a}}', 'x {{ a }} y {{b.c}} {{b.d}}', '[{{n}}|{{f}}|{{z}}|{{u}}]', 'no variables at all', '{{b}}{{a}}{{b.c}}']) {
      const t = compileTemplate(source);
      for (const view of views) {
        expect(t.render(view)).toEqual({ ok: true, text: Mustache.render(source, view, undefined, { escape: toText }) });
      }
    }
  });

  it('renders without HTML escaping, objects as JSON', () => {
    const t = compileTemplate('{{a}} {{{a}}} {{o}}');
    expect(t.render({ a: '<i>&', o: { k: [1] } })).toEqual({ ok: true, text: '<i>& <i>& {"k":[1]}' });
  });

  it('reports every missing field instead of rendering an empty string', () => {
    const t = compileTemplate('{{a}} {{b.c}} {{d}}');
    expect(t.render({ a: 1, b: {} })).toEqual({ ok: false, missing: ['b.c', 'd'] });
    // A present false / 0 / "" is not missing; null is (on both render paths), unless a section handles it.
    expect(compileTemplate('[{{f}}|{{z}}|{{e}}]').render({ f: false, z: 0, e: '' })).toEqual({ ok: true, text: '[false|0|]' });
    expect(compileTemplate('dev: {{temp}} °C').render({ temp: null })).toEqual({ ok: false, missing: ['temp'] });
    expect(compileTemplate('{{#on}}dev: {{temp}} °C{{/on}}').render({ on: true, temp: null })).toEqual({ ok: false, missing: ['temp'] });
    expect(compileTemplate('{{#temp}}{{temp}} °C{{/temp}}{{^temp}}none{{/temp}}').render({ temp: null })).toEqual({ ok: true, text: 'none' });
  });

  it('follows mustache context rules in sections', () => {
    const t = compileTemplate('{{#items}}{{name}}@{{site}} {{/items}}');
    expect(t.render({ site: 'b7', items: [{ name: 'x' }, { name: 'y', site: 'b8' }] })).toEqual({ ok: true, text: 'x@b7 y@b8 ' });
    expect(t.render({ site: 'b7', items: [{ name: 'x' }, {}] })).toEqual({ ok: false, missing: ['name'] });
    // A false section is not rendered, so its body cannot miss anything.
    expect(compileTemplate('{{#on}}{{gone}}{{/on}}ok').render({ on: false })).toEqual({ ok: true, text: 'ok' });
    expect(compileTemplate('{{^on}}off{{/on}}').render({})).toEqual({ ok: true, text: 'off' });
    expect(compileTemplate('{{#list}}{{.}},{{/list}}').render({ list: [1, 2] })).toEqual({ ok: true, text: '1,2,' });
  });

  it('does not reach Object.prototype or run code', () => {
    expect(() => compileTemplate('{{constructor}}')).toThrow('built-in');
    expect(() => compileTemplate('{{a.__proto__}}')).toThrow('built-in');
    expect(() => compileTemplate('{{#toString}}x{{/toString}}')).toThrow('built-in');
    expect(() => compileTemplate('{{> partial}}')).toThrow('partials');
    expect(() => compileTemplate('{{#open}}')).toThrow('parse');
    // An inherited name is missing, not resolved.
    expect(compileTemplate('{{a.map}}').render({ a: [1] })).toEqual({ ok: false, missing: ['a.map'] });
  });

  it('lists its top-level variables', () => {
    expect(compileTemplate('devices/{{device}}/{{ kind }}/x').variables).toEqual(['device', 'kind']);
  });
});
