import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import { TRUNCATION_MARKER } from '../../../src/core/text.js';
import { parseMqttConfig } from '../../../adapters/mqtt/config.js';
import { compileCommands, matchCommand, PUBLISHED_KINDS, renderCommand, renderRoomEvent } from '../../../adapters/mqtt/render.js';
import { compileTemplate } from '../../../adapters/mqtt/template.js';

interface Fixtures {
  base: Record<string, unknown>;
  events: Array<{ name: string; event: Record<string, unknown>; published: boolean; body?: Record<string, unknown> }>;
  commands: {
    config: unknown[];
    cases: Array<{ body: string; topic?: string; responseTopic?: string; payload?: Record<string, unknown>; text?: string }>;
  };
}

const fixtures = JSON.parse(readFileSync(new URL('../../fixtures/mqtt/render.json', import.meta.url), 'utf8')) as Fixtures;
const outTopic = compileTemplate('sg/v1/rooms/{{room}}/out');
const eventOf = (e: Record<string, unknown>) => ({ ...fixtures.base, ...e }) as unknown as LogEvent;

describe('render: room events (fixtures)', () => {
  for (const c of fixtures.events) {
    it(c.name, () => {
      const event = eventOf(c.event);
      expect(PUBLISHED_KINDS.has(event.kind)).toBe(c.published);
      if (!c.published) return;
      const out = renderRoomEvent(event, outTopic);
      if (!out.ok) throw new Error(out.reason);
      expect(out.publication.topic).toBe('sg/v1/rooms/ops/out');
      expect(out.publication.properties.userProperties).toMatchObject({ 'sg-eid': event.eventId, 'sg-cursor': 'AwHoBwICA54DbrE', 'sg-pos': event.cursor, 'sg-kind': event.kind });
      const body = JSON.parse(out.publication.payload) as Record<string, unknown>;
      expect(body).toMatchObject({ v: 1, eventId: event.eventId, cursor: event.cursor, room: 'ops', sender: { uid: 'alice' }, ...c.body });
      expect(body).not.toHaveProperty('idem');
      expect(body).not.toHaveProperty('origin');
    });
  }
});

describe('render: commands (fixtures)', () => {
  const commands = compileCommands(parseMqttConfig({ url: 'mqtt://h:1', clientId: 'c', commands: fixtures.commands.config }).commands);
  for (const c of fixtures.commands.cases) {
    it(`"${c.body}"`, () => {
      const event = eventOf({ kind: 'message', content: { body: c.body } });
      const match = matchCommand(event, commands);
      const out = match && renderCommand(event, match);
      if (c.topic === undefined) {
        // Not a command, or a command whose values cannot be put into a topic.
        expect(out?.ok ?? false).toBe(false);
        return;
      }
      if (!out?.ok) throw new Error(out ? out.reason : 'no match');
      expect(out.publication.topic).toBe(c.topic);
      expect(out.publication.properties.responseTopic).toBe(c.responseTopic);
      expect(out.publication.properties.correlationData?.toString()).toBe(event.eventId);
      expect(out.publication.properties.userProperties['sg-eid']).toBe(event.eventId);
      if (c.payload) expect(JSON.parse(out.publication.payload)).toMatchObject({ eventId: event.eventId, room: 'ops', sender: 'alice', body: c.body, ...c.payload });
      if (c.text) expect(out.publication.payload).toBe(c.text);
    });
  }
});

describe('render: an undecryptable message', () => {
  const notice = eventOf({ kind: 'message', content: { body: '[An encrypted message could not be read]', undecryptable: { reason: 'omemo2', scheme: 'urn:xmpp:omemo:2' } } });

  it('is published with the notice and the structured marker, also as a user property', () => {
    const out = renderRoomEvent(notice, outTopic);
    if (!out.ok) throw new Error(out.reason);
    expect(out.publication.properties.userProperties).toMatchObject({ 'sg-undecryptable': 'omemo2' });
    expect(JSON.parse(out.publication.payload)).toMatchObject({ content: { body: '[An encrypted message could not be read]', undecryptable: { reason: 'omemo2', scheme: 'urn:xmpp:omemo:2' } } });
  });

  it('never matches a command', () => {
    const commands = compileCommands(parseMqttConfig({ url: 'mqtt://h:1', clientId: 'c', commands: [{ pattern: '^\\[(?<command>.+)\\]$', topic: 'devices/all/cmd', responseTopic: 'devices/all/reply' }] }).commands);
    expect(matchCommand(eventOf({ kind: 'message', content: { body: '[An encrypted message could not be read]' } }), commands)).toBeDefined();
    expect(matchCommand(notice, commands)).toBeUndefined();
  });
});

describe('render: the size rule', () => {
  it('keeps a publication within maxPayloadBytes: the formatted text goes, then the body is cut with the visible marker', () => {
    const body = 'ж'.repeat(20_000);
    const event = eventOf({ kind: 'message', content: { body, format: 'markdown', formatted: `**${body}**` } });
    const out = renderRoomEvent(event, outTopic, undefined, { maxPayloadBytes: 16 * 1024 });
    if (!out.ok) throw new Error(out.reason);
    expect(Buffer.byteLength(out.publication.payload)).toBeLessThanOrEqual(16 * 1024);
    const parsed = JSON.parse(out.publication.payload) as { eventId: string; content: { body: string; formatted?: string } };
    expect(parsed.eventId).toBe(event.eventId);
    expect(parsed.content.formatted).toBeUndefined();
    expect(parsed.content.body.endsWith(TRUNCATION_MARKER)).toBe(true);
    // Within the limit nothing changes.
    const whole = renderRoomEvent(event, outTopic, undefined, { maxPayloadBytes: 1024 * 1024 });
    if (!whole.ok) throw new Error(whole.reason);
    expect((JSON.parse(whole.publication.payload) as { content: { formatted: string } }).content.formatted).toBe(`**${body}**`);
  });
});
