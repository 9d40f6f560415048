/**
 * `syncgate dlq list|replay|drop`: the dead-letter streams, straight from the
 * log backend. The in-memory log lives inside the running gateway, so there
 * these commands can only explain that the admin API is the way in.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { SyncgateError } from '../core/errors.js';
import type { DeadLetter } from '../core/ports.js';
import { createEventLog } from '../eventlog/index.js';

export interface DlqCommand {
  readonly config: Config;
  readonly logger: Logger;
  readonly action: 'list' | 'replay' | 'drop';
  readonly ids: readonly string[];
  readonly group: string | undefined;
  readonly limit: number;
  readonly all: boolean;
  /** called as replay/drop goes (the CLI draws it on a terminal) */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface DlqOutcome {
  readonly text: string;
  readonly json: unknown;
}

function table(rows: readonly DeadLetter[]): string {
  if (rows.length === 0) return 'the dead-letter streams are empty';
  return rows.map((d) => `${d.id}\t${d.group}\t${d.room}\t${d.eventId}\t${d.attempts}\t${new Date(d.ts).toISOString()}\t${d.reason}`).join('\n');
}

export async function runDlq(cmd: DlqCommand): Promise<DlqOutcome> {
  if (!cmd.config.redis) {
    throw new SyncgateError('SG_ERR_CLI_USAGE', 'dlq commands need a Redis log (redis.url or SYNCGATE_REDIS_URL); with the in-memory log use the admin API of the running gateway');
  }
  if (!Number.isInteger(cmd.limit) || cmd.limit < 1) throw new SyncgateError('SG_ERR_CLI_USAGE', '--limit must be a positive integer');
  const log = createEventLog({ partitions: cmd.config.partitions, log: cmd.logger, redis: { url: cmd.config.redis.url, cluster: cmd.config.redis.cluster, sentinel: cmd.config.redis.sentinel, prefix: cmd.config.redis.prefix, password: cmd.config.redis.password } });
  try {
    if (cmd.group !== undefined) {
      // a group is the out: group of a configured adapter, or one that has dead letters
      const configured = Object.keys(cmd.config.adapters).map((n) => `out:${n}`);
      if (!configured.includes(cmd.group) && (await log.delivery.deadCount(cmd.group)) === 0) {
        throw new SyncgateError('SG_ERR_CLI_USAGE', `unknown --group ${cmd.group}: no adapter ${cmd.group.replace(/^out:/, '')} in the configuration and no dead letters in it (groups are out:ADAPTER)`);
      }
    }
    if (cmd.action === 'list') {
      const rows = await log.delivery.listDead(cmd.limit, cmd.group);
      return { text: table(rows), json: rows };
    }
    const key = cmd.action === 'replay' ? 'replayed' : 'dropped';
    const present = await log.delivery.listDead(1_000_000, cmd.group);
    let ids = [...cmd.ids];
    if (cmd.all) {
      ids = present.map((d) => d.id);
      if (ids.length === 0) return { text: `nothing to ${cmd.action}: the dead-letter streams are empty`, json: { [key]: 0, requested: 0 } };
    } else {
      if (ids.length === 0) throw new SyncgateError('SG_ERR_CLI_USAGE', `dlq ${cmd.action} needs dead-letter ids or --all`);
      const known = new Set(present.map((d) => d.id));
      const unknown = ids.filter((id) => !known.has(id));
      if (unknown.length > 0) throw new SyncgateError('SG_ERR_NOT_FOUND', `no dead letter ${unknown.join(', ')}${cmd.group !== undefined ? ` in ${cmd.group}` : ''} (syncgate dlq list)`);
    }
    let n = 0;
    const BATCH = 100;
    for (let i = 0; i < ids.length; i += BATCH) {
      const batch = ids.slice(i, i + BATCH);
      n += cmd.action === 'replay' ? await log.delivery.replayDead(batch) : await log.delivery.dropDead(batch);
      cmd.onProgress?.(Math.min(i + BATCH, ids.length), ids.length);
    }
    const verb = cmd.action === 'replay' ? 'queued for another delivery' : 'dropped';
    return { text: `${n} of ${ids.length} dead letter(s) ${verb}`, json: { [key]: n, requested: ids.length } };
  } finally {
    await log.close();
  }
}
