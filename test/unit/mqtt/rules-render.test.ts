import { describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { RoomLink } from '../../../src/core/ports.js';
import { parseMqttConfig } from '../../../adapters/mqtt/config.js';
import { MqttConfigError } from '../../../adapters/mqtt/errors.js';
import { compileCommands, eventBody, matchCommand, renderCommand, renderRoomEvent, responseFilterSource } from '../../../adapters/mqtt/render.js';
import { compileRule, compileRules, rulesFor } from '../../../adapters/mqtt/rules.js';
import { subscriptionIdFor } from '../../../adapters/mqtt/topics.js';

const defaults = parseMqttConfig({ url: 'mqtt://127.0.0.1:1883', clientId: 'gw-1', throttle: { intervalMs: 5000 } });
const link = (target: string, options?: RoomLink['options']): RoomLink => ({ endpoint: 'mqtt', target, ...(options ? { options } : {}) });

const event: LogEvent = {
  v: 1,
  kind: 'message',
  idem: 'api:d:1',
  room: 'ops',
  sender: { uid: 'alice', proto: 'api', native: 'alice/d', display: 'Alice', auth: 'api-token' },
  origin: { proto: 'api', via: 'api', ids: { 'api.txnId': 't1' } },
  ts: { received: 1 },
  content: { body: '!pump-7 stop now' },
  eventId: '0AB12',
  cursor: 'AgQC6AcDlJlt0w',
};

describe('rules', () => {
  it('applies defaults and options', () => {
    const r = compileRule('ops', link('sensors/+device/alert'), defaults);
    expect(r.options).toMatchObject({ decode: 'text', kind: 'message', throttleMs: 5000, sender: 'device', out: true, commands: true, retained: false, outTopic: 'sg/v1/rooms/{{room}}/out' });
    const r2 = compileRule('ops', link('x/+d', { decode: 'json', kind: 'telemetry', throttleMs: 0, sender: 'd', out: false, retained: 'true', outTopic: 'out/{{room}}' }), defaults);
    expect(r2.options).toMatchObject({ decode: 'json', kind: 'telemetry', throttleMs: 0, sender: 'd', out: false, retained: true, outTopic: 'out/{{room}}' });
    expect(compileRule('ops', link('x/+device'), defaults).options).toMatchObject({ outOwn: false, outQos: 1, outRetain: false });
    expect(compileRule('ops', link('x/+device', { outOwn: true, outQos: 0, outRetain: 'true' }), defaults).options).toMatchObject({ outOwn: true, outQos: 0, outRetain: true });
  });

  it('reports every problem of a link at once', () => {
    let err: unknown;
    try {
      compileRule('ops', link('a/#/b', { decode: 'xml', kind: 'chat', throttleMs: -1, template: '{{> p}}', colour: 'red', out: 'maybe', outQos: 3 }), defaults);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MqttConfigError);
    const problems = (err as MqttConfigError).problems.join('\n');
    for (const part of ['target', 'decode', 'kind', 'throttleMs', 'template', 'unknown option colour', 'out must be a boolean', 'outQos must be 0, 1 or 2']) expect(problems).toContain(part);
  });

  it('compiles a rule set: one subscription per plain filter, invalid links reported, not fatal', () => {
    const set = compileRules(
      [
        { room: 'a', link: link('sensors/+device/alert') },
        { room: 'b', link: link('sensors/+unit/alert', { sender: 'unit', retained: true }) },
        { room: 'c', link: link('bad/#/x') },
      ],
      defaults,
    );
    expect(set.rules).toHaveLength(2);
    expect([...set.subscriptions.values()]).toEqual([{ filter: 'sensors/+/alert', id: subscriptionIdFor('sensors/+/alert'), rh: 1 }]);
    expect(set.invalid).toHaveLength(1);
    expect(set.invalid[0]).toMatchObject({ room: 'c', target: 'bad/#/x' });
  });

  it('finds the rules of a message by subscription identifier, one per room', () => {
    const set = compileRules(
      [
        { room: 'a', link: link('sensors/+device/alert') },
        { room: 'a', link: link('sensors/#') },
        { room: 'b', link: link('sensors/#') },
      ],
      defaults,
    );
    const alertId = subscriptionIdFor('sensors/+/alert');
    const allId = subscriptionIdFor('sensors/#');
    // The copy for the first subscription goes to room a (first link); the copy for sensors/# to rooms a and b.
    expect(rulesFor(set, 'sensors/p/alert', [alertId]).map((m) => [m.rule.room, m.rule.link.target])).toEqual([['a', 'sensors/+device/alert']]);
    expect(rulesFor(set, 'sensors/p/alert', [allId]).map((m) => m.rule.room)).toEqual(['a', 'b']);
    // Without identifiers every rule is tried, still once per room.
    expect(rulesFor(set, 'sensors/p/alert', undefined).map((m) => m.rule.room)).toEqual(['a', 'b']);
    expect(rulesFor(set, 'sensors/p/alert', [12345])).toEqual([]);
  });
});

describe('render: room events', () => {
  it('publishes the event JSON with sg-eid, sg-cursor and a content type', () => {
    const rule = compileRule('ops', link('x/+device'), defaults);
    const out = renderRoomEvent(event, rule.outTopic);
    expect(out.ok).toBe(true);
    if (!out.ok) return;
    expect(out.publication.topic).toBe('sg/v1/rooms/ops/out');
    expect(out.publication.properties).toMatchObject({ contentType: 'application/vnd.syncgate.event+json;v=1', payloadFormatIndicator: true, userProperties: { 'sg-eid': '0AB12', 'sg-cursor': 'AwHoBwICA54DbrE', 'sg-pos': 'AgQC6AcDlJlt0w' } });
    const body = JSON.parse(out.publication.payload) as Record<string, unknown>;
    expect(body).toEqual({ v: 1, eventId: '0AB12', cursor: 'AgQC6AcDlJlt0w', next: 'AwHoBwICA54DbrE', room: 'ops', kind: 'message', sender: { uid: 'alice', proto: 'api', display: 'Alice' }, ts: { received: 1 }, content: { body: '!pump-7 stop now' } });
    // Internal ids never leave.
    expect(out.publication.payload).not.toContain('idem');
    expect(out.publication.payload).not.toContain('txnId');
  });

  it('uses the content converted for this endpoint when given', () => {
    expect(eventBody(event, { body: 'plain' })['content']).toEqual({ body: 'plain' });
  });

  it('refuses an out topic that cannot be published to', () => {
    const rule = compileRule('ops', link('x/+device', { outTopic: 'out/+/{{room}}' }), defaults);
    expect(renderRoomEvent(event, rule.outTopic)).toMatchObject({ ok: false });
  });
});

describe('render: commands', () => {
  const [command] = compileCommands(
    parseMqttConfig({
      url: 'mqtt://h:1',
      clientId: 'c',
      commands: [{ pattern: '^!(?<device>[\\w-]+) (?<command>.+)$', topic: 'devices/{{device}}/cmd', responseTopic: 'devices/{{device}}/cmd/response' }],
    }).commands,
  );

  it('derives the response subscription from the response topic template', () => {
    expect(responseFilterSource('devices/{{device}}/cmd/response')).toBe('devices/+device/cmd/response');
    expect(responseFilterSource('r/{{ a }}/x-{{b}}/{{{c}}}')).toBe('r/+a/+/+c');
    expect(command?.responseFilter.plain).toBe('devices/+/cmd/response');
  });

  it('matches a room message and renders the command with response topic and correlation data', () => {
    const match = matchCommand(event, command ? [command] : []);
    expect(match?.vars).toMatchObject({ device: 'pump-7', command: 'stop now', room: 'ops', sender: 'alice', eventId: '0AB12' });
    const out = match && renderCommand(event, match);
    expect(out?.ok).toBe(true);
    if (!out?.ok) return;
    expect(out.publication.topic).toBe('devices/pump-7/cmd');
    expect(out.publication.properties.responseTopic).toBe('devices/pump-7/cmd/response');
    expect(out.publication.properties.correlationData?.toString()).toBe('0AB12');
    expect(JSON.parse(out.publication.payload)).toEqual({ v: 1, eventId: '0AB12', room: 'ops', sender: 'alice', body: '!pump-7 stop now', device: 'pump-7', command: 'stop now' });
  });

  it('does not match other messages or other kinds', () => {
    expect(matchCommand({ ...event, content: { body: 'pump-7 stop' } }, command ? [command] : [])).toBeUndefined();
    expect(matchCommand({ ...event, kind: 'edit', rel: { replaces: 'x' } } as LogEvent, command ? [command] : [])).toBeUndefined();
  });

  it('refuses group values that would change the topic structure', () => {
    const [loose] = compileCommands([{ ...(command?.config ?? ({} as never)), pattern: '^!(?<device>\\S+) (?<command>.+)$' }]);
    const bad = { ...event, content: { body: '!a/b stop' } };
    const match = matchCommand(bad, loose ? [loose] : []);
    expect(match && renderCommand(bad, match)).toMatchObject({ ok: false });
  });

  it('reports bad command configuration', () => {
    expect(() => compileCommands([{ ...(command?.config ?? ({} as never)), pattern: '(' }])).toThrow('pattern');
  });
});
