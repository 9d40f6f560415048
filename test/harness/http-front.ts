/**
 * An HTTP front for replicas of one listener (what a Kubernetes Service or a
 * load balancer is for an application service whose replicas take turns):
 * each request goes to the first backend port that accepts a connection, in
 * the order given; when none does, the client's connection is destroyed (to
 * the homeserver, a failed push, as with a dead gateway).
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LOOPBACK } from './free-port.js';

export interface HttpFront {
  readonly port: number;
  readonly url: string;
  /** requests forwarded, per backend port */
  readonly forwarded: Map<number, number>;
  close(): Promise<void>;
}

function forward(port: number, req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const out = request({ host: LOOPBACK, port, method: req.method, path: req.url, headers: req.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    out.on('error', reject);
    out.end(body);
  });
}

export async function startHttpFront(backends: () => readonly number[]): Promise<HttpFront> {
  const forwarded = new Map<number, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        for (const port of backends()) {
          try {
            const answer = await forward(port, req, Buffer.concat(chunks));
            forwarded.set(port, (forwarded.get(port) ?? 0) + 1);
            res.writeHead(answer.status, answer.headers);
            res.end(answer.body);
            return;
          } catch {
            // refused or cut: the next backend
          }
        }
        req.socket.destroy();
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://${LOOPBACK}:${port}`,
    forwarded,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
