/**
 * Commands waiting for a device's response, by correlation data (the
 * command's event id). Each has a timer; a response clears it, a timeout
 * fires `onTimeout`. Everything is cleared on stop(): no timer outlives the
 * adapter. Completed and timed-out commands are remembered for a while so a
 * late response still finds its room.
 */

export interface PendingCommand {
  readonly eventId: string;
  readonly room: string;
  readonly commandName: string;
  /** the pattern's groups and the message fields, for the timeout notice */
  readonly vars: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
}

export class PendingCommands {
  private readonly pending = new Map<string, { command: PendingCommand; timer: NodeJS.Timeout }>();
  /** eventId → room of recently finished commands (bounded, oldest first out) */
  private readonly recent = new Map<string, string>();

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
      this.remember(command);
      this.options.onTimeout(command);
    }, command.timeoutMs);
    timer.unref();
    this.pending.set(command.eventId, { command, timer });
  }

  /** A response arrived: the pending command (timer cleared), or the room of a finished one, or undefined. */
  answer(eventId: string): { command?: PendingCommand; room?: string } {
    const entry = this.pending.get(eventId);
    if (entry) {
      clearTimeout(entry.timer);
      this.pending.delete(eventId);
      this.remember(entry.command);
      return { command: entry.command, room: entry.command.room };
    }
    const room = this.recent.get(eventId);
    return room === undefined ? {} : { room };
  }

  has(eventId: string): boolean {
    return this.pending.has(eventId);
  }

  private remember(command: PendingCommand): void {
    this.recent.set(command.eventId, command.room);
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
