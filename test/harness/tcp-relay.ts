// A TCP relay between a client under test and a server (e.g. the adapter and
// Prosody) that can hold the traffic of one direction and release it later in
// ONE write, so the client reads what was held in a single chunk. Tests use it
// to make races deterministic ("the join answer and a live message in the same
// read") instead of hoping for the timing.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { LOOPBACK } from './free-port.js';

export type Direction = 'up' | 'down';

export interface TcpRelay {
  readonly port: number;
  /** `xmpp://127.0.0.1:<port>` for @xmpp/client */
  readonly service: string;
  /** Holds what flows in this direction (up = client → server) from now on. */
  hold(direction: Direction): void;
  /** Writes everything held in this direction in one write, and lets traffic flow again. */
  release(direction: Direction): void;
  /** What is held in this direction, as text. */
  held(direction: Direction): string;
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly server: Socket;
}

export async function startTcpRelay(target: { host?: string; port: number }): Promise<TcpRelay> {
  const pairs = new Set<Pair>();
  const holding: Record<Direction, boolean> = { up: false, down: false };
  // Held bytes per pair and direction; the newest pair is the one tests care about.
  const buffers = new Map<Pair, Record<Direction, Buffer[]>>();

  const server: Server = createServer((client) => {
    const upstream = connect({ host: target.host ?? LOOPBACK, port: target.port });
    const pair: Pair = { client, server: upstream };
    pairs.add(pair);
    buffers.set(pair, { up: [], down: [] });
    const forward = (direction: Direction, to: Socket) => (chunk: Buffer) => {
      if (holding[direction]) buffers.get(pair)?.[direction].push(chunk);
      else to.write(chunk);
    };
    client.on('data', forward('up', upstream));
    upstream.on('data', forward('down', client));
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
      buffers.delete(pair);
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: LOOPBACK, port: 0 }, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('tcp-relay: no TCP address');
  const port = address.port;

  return {
    port,
    service: `xmpp://${LOOPBACK}:${port}`,
    hold(direction) {
      holding[direction] = true;
    },
    release(direction) {
      holding[direction] = false;
      for (const [pair, held] of buffers) {
        const chunks = held[direction].splice(0);
        if (chunks.length === 0) continue;
        (direction === 'up' ? pair.server : pair.client).write(Buffer.concat(chunks));
      }
    },
    held(direction) {
      return [...buffers.values()].map((b) => Buffer.concat(b[direction]).toString('utf8')).join('');
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.server.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
