/**
 * Commands waiting for a device's response, by correlation data (the
 * command's event id). Each has a timer; a response clears it, a timeout
 * fires `onTimeout`. Everything is cleared on stop(): no timer outlives the
 * adapter.
 *
 * A command is bound to the response topic it named (so to its device): a
 * response on another topic is not its answer. Answered and timed-out
 * commands are remembered for a while, so a second or a late response is
 * recognised and dropped rather than posted.
 */

export interface PendingCommand {
  readonly eventId: string;
  readonly room: string;
  readonly commandName: string;
  /** the response topic sent with the command: the only topic its answer may come on */
  readonly responseTopic: string;
  /** the pattern's groups and the message fields, for the timeout notice */
  readonly vars: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
}

/** What a response with some correlation data on some topic is. */
export type ResponseMatch =
  /** the answer to a pending command (its timer is cleared; later responses are `answered`) */
  | { readonly status: 'pending'; readonly command: PendingCommand }
  /** a command is waiting for this correlation data, but on another topic (another device): not its answer */
  | { readonly status: 'wrong-topic'; readonly expected: string }
  | { readonly status: 'answered' | 'timed-out'; readonly room: string }
  /** not a command of this process (sent before a restart, or forgotten) */
  | { readonly status: 'unknown' };

export class PendingCommands {
  private readonly pending = new Map<string, { command: PendingCommand; timer: NodeJS.Timeout }>();
  /** eventId → what became of recently finished commands (bounded, oldest first out) */
  private readonly recent = new Map<string, { room: string; responseTopic: string; status: 'answered' | 'timed-out' }>();

  constructor(
    private readonly options: {
      readonly onTimeout: (command: PendingCommand) => void;
      readonly recentMax?: number;
    },
  ) {}

  get size(): number {
    return this.pending.size;
  }

  add(command: PendingCommand): void {
    this.clear(command.eventId);
    const timer = setTimeout(() => {
      this.pending.delete(command.eventId);
      this.remember(command.eventId, command.room, command.responseTopic, 'timed-out');
      this.options.onTimeout(command);
    }, command.timeoutMs);
    timer.unref();
    this.pending.set(command.eventId, { command, timer });
  }

  /** A response arrived on `topic`: binds it to its command, if it is that command's first answer on its topic. */
  answer(eventId: string, topic: string): ResponseMatch {
    const entry = this.pending.get(eventId);
    if (entry) {
      if (entry.command.responseTopic !== topic) return { status: 'wrong-topic', expected: entry.command.responseTopic };
      clearTimeout(entry.timer);
      this.pending.delete(eventId);
      this.remember(eventId, entry.command.room, topic, 'answered');
      return { status: 'pending', command: entry.command };
    }
    const known = this.recent.get(eventId);
    if (!known) return { status: 'unknown' };
    if (known.responseTopic !== topic) return { status: 'wrong-topic', expected: known.responseTopic };
    return { status: known.status, room: known.room };
  }

  /** A command of an earlier process, answered now (its response topic checked by the caller): later responses are `answered`. */
  answered(eventId: string, room: string, responseTopic: string): void {
    this.remember(eventId, room, responseTopic, 'answered');
  }

  has(eventId: string): boolean {
    return this.pending.has(eventId);
  }

  private remember(eventId: string, room: string, responseTopic: string, status: 'answered' | 'timed-out'): void {
    this.recent.delete(eventId);
    this.recent.set(eventId, { room, responseTopic, status });
    const max = this.options.recentMax ?? 1000;
    while (this.recent.size > max) {
      const oldest = this.recent.keys().next().value;
      if (oldest === undefined) break;
      this.recent.delete(oldest);
    }
  }

  private clear(eventId: string): void {
    const entry = this.pending.get(eventId);
    if (entry) clearTimeout(entry.timer);
    this.pending.delete(eventId);
  }

  /** Cancels every timer (no notices are posted for commands still waiting). */
  close(): void {
    for (const { timer } of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
  }
}
