/**
 * Counting a process's Redis connections: every connection syncgate opens is
 * named after its key prefix (`CLIENT SETNAME`, e.g. `<prefix>main`,
 * `<prefix>tail:g07`), so the connections of a gateway with a test's own
 * prefix are the CLIENT LIST entries with that name prefix, on every node
 * it may connect to (one Redis, or every node of a cluster).
 */
import { redisCommand } from './redis.js';

export interface NamedConnection {
  /** the port of the node the connection is on */
  readonly port: number;
  /** the connection's name, prefix included */
  readonly name: string;
}

/** `host:port` or a redis:// URL → its port */
export function portOf(node: string): number {
  const url = /^rediss?:\/\//.test(node) ? new URL(node) : undefined;
  return Number(url ? url.port || 6379 : node.slice(node.lastIndexOf(':') + 1));
}

/** The connections named after `prefix` on each of the nodes (`host:port` or redis:// URLs, with their password, on the loopback). */
export async function connectionsOf(nodes: readonly string[], prefix: string): Promise<NamedConnection[]> {
  const out: NamedConnection[] = [];
  for (const node of nodes) {
    const port = portOf(node);
    const password = /^rediss?:\/\//.test(node) ? decodeURIComponent(new URL(node).password) : '';
    const list = String(await redisCommand(port, password || undefined, 'CLIENT', 'LIST'));
    for (const line of list.split('\n')) {
      const name = /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '';
      if (name.startsWith(prefix)) out.push({ port, name });
    }
  }
  return out;
}

/** How many of each kind, e.g. `3 main, 18 tail:g#` (numbers at the end of a name folded into #). */
export function connectionKinds(connections: readonly NamedConnection[], prefix: string): string {
  const counts = new Map<string, number>();
  for (const { name } of connections) {
    const kind = name.slice(prefix.length).replace(/\d+$/, '#');
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return [...counts].map(([kind, n]) => `${n} ${kind}`).join(', ');
}
