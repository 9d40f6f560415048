/**
 * Pure: log events → MQTT publications.
 *
 * Room events go to the link's out topic as JSON, QoS 1, with user
 * properties `sg-eid` (our event id: devices dedupe on it and we recognise
 * it if it ever comes back in), `sg-cursor` (a sync cursor: where a device
 * resumes with /v1/sync, just after this event) and `sg-pos` (the event's
 * position, for /v1/rooms/:room/messages). A room message matching a command pattern also becomes a
 * command publication to the device, with MQTT 5 Response Topic and
 * Correlation Data (the command's event id).
 */
import { syncCursorAfter } from '../../src/core/cursor.js';
import type { Content, LogEvent } from '../../src/core/event.js';
import { truncateToBytes, utf8Length } from '../../src/core/text.js';
import type { MqttCommandConfig } from './config.js';
import { CURSOR_PROPERTY, EID_PROPERTY, POSITION_PROPERTY } from './normalise.js';
import { compileTemplate, type Template } from './template.js';
import { isPublishableTopic, parseNamedFilter, type NamedFilter } from './topics.js';

export const EVENT_CONTENT_TYPE = 'application/vnd.syncgate.event+json;v=1';
export const COMMAND_CONTENT_TYPE = 'application/vnd.syncgate.command+json;v=1';

/** Kinds published to the out topic; the others are not for devices. */
export const PUBLISHED_KINDS: ReadonlySet<LogEvent['kind']> = new Set(['message', 'edit', 'retraction', 'reaction']);

export interface Publication {
  readonly topic: string;
  readonly payload: string;
  /** default 1 */
  readonly qos?: 0 | 1 | 2;
  /** default false */
  readonly retain?: boolean;
  readonly properties: {
    readonly contentType: string;
    readonly payloadFormatIndicator: true;
    readonly userProperties: Record<string, string>;
    readonly responseTopic?: string;
    readonly correlationData?: Buffer;
  };
}

export type RenderOutcome = { readonly ok: true; readonly publication: Publication } | { readonly ok: false; readonly reason: string };

/**
 * The event as devices see it: no internal origin ids or idempotency keys;
 * `content` as converted for this endpoint when given. `cursor` is the
 * event's position (as in the HTTP API), `next` the sync cursor just after
 * it (`GET /v1/sync?since=`), for clients without user properties.
 */
export function eventBody(event: LogEvent, content?: Content, next: string = syncCursorAfter(event.cursor)): Record<string, unknown> {
  const body: Record<string, unknown> = {
    v: 1,
    eventId: event.eventId,
    cursor: event.cursor,
    next,
    room: event.room,
    kind: event.kind,
    sender: { uid: event.sender.uid, proto: event.sender.proto, ...(event.sender.display ? { display: event.sender.display } : {}) },
    ts: event.ts,
  };
  if ('content' in event) body['content'] = content ?? event.content;
  if ('rel' in event && event.rel) body['rel'] = event.rel;
  if (event.kind === 'reaction') body['reaction'] = event.reaction;
  return body;
}

function syncCursorOf(event: LogEvent): string | undefined {
  try {
    return syncCursorAfter(event.cursor);
  } catch {
    return undefined;
  }
}

/** What a payload holds besides the text (ids, cursors, sender, relations): the adapter's `maxBodyBytes` is its payload limit less this. */
export const ENVELOPE_BYTES = 4096;

/**
 * Size rule (README "Message size"): a payload over `maxBytes` loses its
 * formatted text first, then its body is cut with the visible marker.
 */
function fitPayload(body: Record<string, unknown>, maxBytes: number): string {
  const whole = JSON.stringify(body);
  const content = body['content'] as Content | undefined;
  if (utf8Length(whole) <= maxBytes || content === undefined) return whole;
  const { format: _format, formatted: _formatted, ...plain } = content;
  const withText = (text: string): string => JSON.stringify({ ...body, content: { ...plain, body: text } });
  if (utf8Length(withText(plain.body)) <= maxBytes) return withText(plain.body);
  return withText(truncateToBytes(plain.body, maxBytes, (text) => utf8Length(withText(text))));
}

export function renderRoomEvent(
  event: LogEvent,
  outTopic: Template,
  content?: Content,
  delivery: { readonly qos?: 0 | 1 | 2; readonly retain?: boolean; readonly maxPayloadBytes?: number } = {},
): RenderOutcome {
  const { maxPayloadBytes, ...publish } = delivery;
  const rendered = outTopic.render({ room: event.room });
  if (!rendered.ok) return { ok: false, reason: `out topic template misses ${rendered.missing.join(', ')}` };
  if (!isPublishableTopic(rendered.text)) return { ok: false, reason: `"${rendered.text}" is not a topic one can publish to` };
  const next = syncCursorOf(event);
  if (next === undefined) return { ok: false, reason: 'the event has no valid position' };
  return {
    ok: true,
    publication: {
      topic: rendered.text,
      payload: fitPayload(eventBody(event, content, next), maxPayloadBytes ?? Number.POSITIVE_INFINITY),
      ...publish,
      properties: {
        contentType: EVENT_CONTENT_TYPE,
        payloadFormatIndicator: true,
        userProperties: {
          [EID_PROPERTY]: event.eventId,
          [CURSOR_PROPERTY]: next,
          [POSITION_PROPERTY]: event.cursor,
          'sg-kind': event.kind,
          // Devices that only read properties still see that the body is a notice, not the sender's words.
          ...('content' in event && event.content.undecryptable ? { 'sg-undecryptable': event.content.undecryptable.reason } : {}),
        },
      },
    },
  };
}

export interface Command {
  readonly name: string;
  readonly config: MqttCommandConfig;
  readonly pattern: RegExp;
  readonly topic: Template;
  readonly responseTopic: Template;
  /** the response topic as a subscription filter with named wildcards (`{{device}}` → `+device`) */
  readonly responseFilter: NamedFilter;
  readonly payload: Template | undefined;
  readonly responseTemplate: Template | undefined;
  readonly timeoutTemplate: Template;
  readonly denyTemplate: Template;
}

/**
 * `devices/{{device}}/cmd/response` → `devices/+device/cmd/response`. A
 * level that is exactly one variable becomes a named wildcard; a level that
 * mixes text and variables becomes an anonymous `+` (a superset: responses
 * are matched by correlation data anyway).
 */
export function responseFilterSource(template: string): string {
  return template
    .split('/')
    .map((level) => {
      const whole = /^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$/.exec(level) ?? /^\{\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\}$/.exec(level);
      if (whole) return `+${whole[1]}`;
      return level.includes('{{') ? '+' : level;
    })
    .join('/');
}

/** Compiles the configured commands; throws an Error listing the problems. */
export function compileCommands(configs: readonly MqttCommandConfig[]): Command[] {
  const problems: string[] = [];
  const out: Command[] = [];
  configs.forEach((config, i) => {
    const where = `commands[${i}]`;
    const local: string[] = [];
    const attempt = <T>(what: string, f: () => T): T | undefined => {
      try {
        return f();
      } catch (err) {
        local.push(`${where}.${what}: ${(err as Error).message}`);
        return undefined;
      }
    };
    const pattern = attempt('pattern', () => new RegExp(config.pattern, config.flags));
    const topic = attempt('topic', () => compileTemplate(config.topic));
    const responseTopic = attempt('responseTopic', () => compileTemplate(config.responseTopic));
    const responseFilter = attempt('responseTopic', () => parseNamedFilter(responseFilterSource(config.responseTopic)));
    const payload = config.payload === undefined ? undefined : attempt('payload', () => compileTemplate(config.payload as string));
    const responseTemplate = config.responseTemplate === undefined ? undefined : attempt('responseTemplate', () => compileTemplate(config.responseTemplate as string));
    const timeoutTemplate = attempt('timeoutTemplate', () => compileTemplate(config.timeoutTemplate));
    const denyTemplate = attempt('denyTemplate', () => compileTemplate(config.denyTemplate));
    problems.push(...local);
    if (local.length === 0 && pattern && topic && responseTopic && responseFilter && timeoutTemplate && denyTemplate) {
      out.push({ name: config.name ?? config.pattern, config, pattern, topic, responseTopic, responseFilter, payload, responseTemplate, timeoutTemplate, denyTemplate });
    }
  });
  if (problems.length > 0) throw new Error(problems.join('; '));
  return out;
}

export interface CommandMatch {
  readonly command: Command;
  /** named groups of the pattern, plus `room`, `sender`, `body` and `eventId` */
  readonly vars: Readonly<Record<string, string>>;
}

/** The first command whose pattern matches the message body. */
export function matchCommand(event: LogEvent, commands: readonly Command[]): CommandMatch | undefined {
  // A notice about an unreadable message is nobody's command.
  if (event.kind !== 'message' || event.content.undecryptable) return undefined;
  const body = event.content.body;
  for (const command of commands) {
    const m = command.pattern.exec(body);
    if (!m) continue;
    const groups: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.groups ?? {})) if (v !== undefined) groups[k] = v;
    return { command, vars: { ...groups, room: event.room, sender: event.sender.uid, body, eventId: event.eventId } };
  }
  return undefined;
}

/** A value placed into a topic must stay one level: no separators or wildcards. */
function safeLevelValues(vars: Readonly<Record<string, string>>, template: Template): string | undefined {
  for (const name of template.variables) {
    const v = vars[name];
    if (v !== undefined && (v.length === 0 || /[/+#]/.test(v) || v.includes('\u0000'))) return `"${name}" = "${v}" cannot be used in a topic`;
  }
  return undefined;
}

/**
 * May this event's sender issue the command? HTTP users reach a room only
 * when granted it (the API checks), so `*` means every granted user. A
 * bridged sender must be listed (by uid, directly or in a role), and its
 * identity must be vouched for by its server — never only claimed.
 */
export function mayIssue(command: Command, sender: LogEvent['sender'], roles: Readonly<Record<string, readonly string[]>>): boolean {
  const { users, bridged } = command.config.allow;
  const inRole = command.config.allow.roles.some((r) => (Object.hasOwn(roles, r) ? roles[r] : undefined)?.includes(sender.uid) === true);
  if (sender.proto === 'api') return users.includes('*') || users.includes(sender.uid) || inRole;
  if (sender.auth === 'claimed') return false;
  return bridged.includes(sender.uid) || inRole;
}

export function renderCommand(event: LogEvent, match: CommandMatch): RenderOutcome {
  const { command, vars } = match;
  for (const t of [command.topic, command.responseTopic]) {
    const unsafe = safeLevelValues(vars, t);
    if (unsafe) return { ok: false, reason: unsafe };
  }
  const topic = command.topic.render(vars);
  const responseTopic = command.responseTopic.render(vars);
  if (!topic.ok) return { ok: false, reason: `command topic misses ${topic.missing.join(', ')}` };
  if (!responseTopic.ok) return { ok: false, reason: `response topic misses ${responseTopic.missing.join(', ')}` };
  if (!isPublishableTopic(topic.text) || !isPublishableTopic(responseTopic.text)) return { ok: false, reason: 'the command or response topic is not publishable' };
  const next = syncCursorOf(event);
  if (next === undefined) return { ok: false, reason: 'the event has no valid position' };
  let payload: string;
  if (command.payload) {
    const p = command.payload.render(vars);
    if (!p.ok) return { ok: false, reason: `command payload misses ${p.missing.join(', ')}` };
    payload = p.text;
  } else {
    const { room, sender, body, eventId, ...groups } = vars;
    payload = JSON.stringify({ v: 1, eventId, room, sender, body, ...groups });
  }
  return {
    ok: true,
    publication: {
      topic: topic.text,
      payload,
      properties: {
        contentType: command.payload ? 'text/plain;charset=utf-8' : COMMAND_CONTENT_TYPE,
        payloadFormatIndicator: true,
        responseTopic: responseTopic.text,
        correlationData: Buffer.from(event.eventId, 'utf8'),
        userProperties: { [EID_PROPERTY]: event.eventId, [CURSOR_PROPERTY]: next, [POSITION_PROPERTY]: event.cursor },
      },
    },
  };
}
