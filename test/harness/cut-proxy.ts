// A TCP proxy in front of a server (Prosody, Mosquitto, the fake homeserver)
// that a test can cut — every connection through it closed and new ones
// refused — and restore on the same port, so an adapter meets "the server is
// unreachable" and "it is back" whatever its protocol.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { LOOPBACK, getFreePort } from './free-port.js';

export interface CutProxy {
  readonly port: number;
  /** `<scheme>://127.0.0.1:<port>` */
  url(scheme: string): string;
  /** Closes every connection through the proxy and stops listening: connects are refused. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startCutProxy(target: { host?: string; port: number }): Promise<CutProxy> {
  const port = await getFreePort();
  const sockets = new Set<Socket>();
  let server: Server | undefined;

  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        track(client);
        const upstream = connect({ host: target.host ?? LOOPBACK, port: target.port });
        track(upstream);
        client.pipe(upstream);
        upstream.pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      s.once('error', reject);
      s.listen(port, LOOPBACK, () => {
        s.off('error', reject);
        server = s;
        resolve();
      });
    });

  const cut = async () => {
    const s = server;
    server = undefined;
    if (s) await new Promise<void>((resolve) => {
      s.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
    for (const socket of sockets) socket.destroy();
  };

  await listen();
  return {
    port,
    url: (scheme) => `${scheme}://${LOOPBACK}:${port}`,
    cut,
    async restore() {
      if (!server) await listen();
    },
    close: cut,
  };
}
