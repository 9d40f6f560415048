/**
 * Gateway notices in a room, in reply to a command: "no response in time"
 * (a pending command's timer, commands.ts) and "you may not send this
 * command" (deliver.ts). Each is idempotent per command and kind, and
 * appended in the background; stop() waits for it.
 */
import type { DraftOf, LogEvent } from '../../src/core/event.js';
import { truncate } from '../../src/core/text.js';
import type { PendingCommand } from './commands.js';
import type { CommandMatch } from './render.js';
import { track, withRetry } from './sink.js';
import type { MqttState } from './state.js';

const GATEWAY_UID = 'mqtt:gateway';

/** A pending command timed out: its timeoutTemplate (or a default line) in its room. */
export function postTimeout(state: MqttState, c: PendingCommand): void {
  state.stats.counters.commandTimeouts++;
  const command = state.commands.find((x) => x.name === c.commandName);
  const view = { ...c.vars, seconds: String(Math.round(c.timeoutMs / 100) / 10) };
  const rendered = command?.timeoutTemplate.render(view);
  state.log.info({ room: c.room, command: c.commandName, eventId: c.eventId }, 'command timed out');
  postNotice(state, c.room, c.eventId, 'timeout', rendered?.ok ? rendered.text : `No response to the command within ${view.seconds} s`);
}

/** The sender of `event` may not issue the command it matched: its denyTemplate (or a default line) in the room. */
export function postDenied(state: MqttState, event: LogEvent, match: CommandMatch): void {
  state.stats.counters.commandsDenied++;
  const rendered = match.command.denyTemplate.render({ ...match.vars, sender: event.sender.display ?? event.sender.uid });
  state.log.info({ room: event.room, command: match.command.name, eventId: event.eventId, sender: event.sender.uid }, 'command denied');
  postNotice(state, event.room, event.eventId, 'denied', rendered.ok ? rendered.text : 'You may not send this command');
}

function postNotice(state: MqttState, room: string, commandEventId: string, what: 'timeout' | 'denied', body: string): void {
  const draft: DraftOf<'message'> = {
    v: 1,
    kind: 'message',
    idem: `mqtt:gateway:${what}:${commandEventId}`,
    room,
    sender: { uid: GATEWAY_UID, proto: 'mqtt', native: state.config.clientId, display: 'MQTT gateway', auth: 'server' },
    origin: { proto: 'mqtt', via: state.name, ids: {} },
    ts: { received: Date.now() },
    content: { body: truncate(body) },
    rel: { replyTo: commandEventId },
  };
  track(
    state.background,
    withRetry(state, () => state.sink.ingest(draft)).then(
      (r) => state.stats.countResult(r),
      (err: unknown) => state.log.error({ err, room }, `could not append a command ${what} notice`),
    ),
  );
}
