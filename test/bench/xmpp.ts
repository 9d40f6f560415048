/**
 * MUC → log ingest through the XMPP adapter (real Prosody, log in Redis),
 * against a bare @xmpp/client in the same room receiving the same messages in
 * the same run: rate and latency (send → durably appended, vs send → received).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { client, xml, type Client, type XmlElement } from '@xmpp/client';
import type { IngestSink } from '../../src/core/adapter.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createXmppAdapter, parseXmppConfig } from '../../adapters/xmpp/index.js';
import { rawId } from '../../adapters/xmpp/ids.js';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const NS_MUC = 'http://jabber.org/protocol/muc';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_SID = 'urn:xmpp:sid:0';

async function login(server: ProsodyServer, user: string, onStanza: (s: XmlElement) => void): Promise<Client> {
  const xmpp = client({ service: server.service, domain: server.domain, username: user, password: `${user}-pw`, resource: 'bench', timeout: 10_000 });
  xmpp.on('stanza', onStanza);
  xmpp.on('error', () => undefined);
  // As the adapter does: no Nagle delay on small stanzas, so the figures are the paths', not TCP's.
  xmpp.on('connect', () => xmpp.socket?.setNoDelay?.(true));
  await xmpp.start();
  // Nothing before XEP-0198 is enabled (see adapters/xmpp/client.ts).
  await waitFor(() => xmpp.streamManagement.enabled, { what: 'stream management', timeoutMs: 10_000, intervalMs: 5 });
  await xmpp.send(xml('presence'));
  return xmpp;
}

async function join(xmpp: Client, room: string, nick: string, seen: () => XmlElement[]): Promise<void> {
  await xmpp.send(xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: NS_MUC }, xml('history', { maxstanzas: '0' }))));
  await waitFor(
    () => seen().some((s) => s.is('presence') && s.attrs['from'] === `${room}/${nick}` && (s.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []).some((st) => st.attrs['code'] === '110')),
    { what: `${nick} to join`, timeoutMs: 10_000, intervalMs: 5 },
  );
}

function stats(sent: Map<string, number>, arrived: Map<string, number>): { rate: number; p50: number; p99: number } {
  const latencies = [...arrived].map(([id, t]) => t - (sent.get(id) ?? t)).sort((a, b) => a - b);
  const first = Math.min(...sent.values());
  const last = Math.max(...arrived.values());
  return { rate: (arrived.size / (last - first)) * 1000, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

export const benchXmpp: Bench = async (ctx) => {
  const n = ctx.quick ? 200 : 1000;
  const server = await startProsody();
  const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: ctx.redisUrl, prefix: testPrefix('bench-xmpp') } });
  const clients: Client[] = [];
  const stops: Array<() => Promise<unknown>> = [];
  try {
    await Promise.all(['bridge', 'sender', 'baseline'].map((u) => server.createUser(u, `${u}-pw`)));
    const room = `bench-${randomUUID().slice(0, 8)}@${server.mucDomain}`;
    await log.rooms.put({ id: 'bench', links: [{ endpoint: 'xmpp', target: room }] });

    const sent = new Map<string, number>();
    const viaBaseline = new Map<string, number>();
    const viaAdapter = new Map<string, number>();

    const senderSeen: XmlElement[] = [];
    const sender = await login(server, 'sender', (s) => senderSeen.push(s));
    clients.push(sender);
    await join(sender, room, 'Sender', () => senderSeen);

    const baselineSeen: XmlElement[] = [];
    const baseline = await login(server, 'baseline', (s) => {
      const id = s.attrs['id'];
      if (s.is('message') && id !== undefined && sent.has(id) && !viaBaseline.has(id)) viaBaseline.set(id, performance.now());
      else if (s.is('presence')) baselineSeen.push(s);
    });
    clients.push(baseline);
    await join(baseline, room, 'Baseline', () => baselineSeen);

    const inner = createIngestSink({ log, logger: silentLogger() });
    const sink: IngestSink = {
      ...inner,
      async ingest(draft, options) {
        const result = await inner.ingest(draft, options);
        const id = rawId(draft.origin.ids['xmpp.originId']);
        if (id !== undefined && result.status === 'appended') viaAdapter.set(id, performance.now());
        return result;
      },
    };
    const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
    stops.push(async () => links.close());
    const adapter = createXmppAdapter({
      name: 'xmpp',
      config: parseXmppConfig({ service: server.service, jid: `bridge@${server.domain}`, password: 'bridge-pw', selfPingIntervalMs: 0 }),
      log: silentLogger(),
      sink,
      links,
    });
    await adapter.start();
    stops.unshift(() => adapter.stop());
    if (!adapter.status().ready) throw new Error('the XMPP adapter did not get ready');

    for (let i = 0; i < n; i++) {
      const id = randomUUID();
      sent.set(id, performance.now());
      await sender.send(xml('message', { to: room, type: 'groupchat', id }, xml('body', {}, `bench message ${i}`), xml('origin-id', { xmlns: NS_SID, id })));
    }
    await waitFor(() => viaBaseline.size === n && viaAdapter.size === n, { what: `${n} messages at the bare client and in the log`, timeoutMs: 120_000, intervalMs: 10 });

    const a = stats(sent, viaAdapter);
    const b = stats(sent, viaBaseline);

    // Paced: one message at a time, so the latency is the path's own, not a queue behind a burst.
    const paced = ctx.quick ? 30 : 200;
    const pacedSent = new Map<string, number>();
    for (let i = 0; i < paced; i++) {
      const id = randomUUID();
      const t = performance.now();
      sent.set(id, t);
      pacedSent.set(id, t);
      await sender.send(xml('message', { to: room, type: 'groupchat', id }, xml('body', {}, `paced message ${i}`), xml('origin-id', { xmlns: NS_SID, id })));
      await waitFor(() => viaBaseline.has(id) && viaAdapter.has(id), { what: 'a paced message at both', timeoutMs: 10_000, intervalMs: 1 });
    }
    const lat = (arrived: Map<string, number>) => [...pacedSent].map(([id, t]) => (arrived.get(id) ?? t) - t).sort((x, y) => x - y);
    const pa = lat(viaAdapter);
    const pb = lat(viaBaseline);

    const rows: BenchRow[] = [
      { name: 'MUC → log ingest rate (burst)', value: a.rate, unit: 'msg/s', baseline: b.rate, ratio: a.rate / b.rate, goal: '≥ 0.5 of a bare client', note: `${n} messages sent back to back; baseline: a bare @xmpp/client receiving them` },
      { name: 'burst latency p50', value: a.p50, unit: 'ms', baseline: b.p50, ratio: a.p50 / b.p50, note: 'send → durably appended (baseline: send → received); mostly queueing at the server' },
      { name: 'burst latency p99', value: a.p99, unit: 'ms', baseline: b.p99, ratio: a.p99 / b.p99 },
      { name: 'paced latency p50', value: percentile(pa, 50), unit: 'ms', baseline: percentile(pb, 50), ratio: percentile(pa, 50) / percentile(pb, 50), note: `${paced} messages one at a time` },
      { name: 'paced latency p99', value: percentile(pa, 99), unit: 'ms', baseline: percentile(pb, 99), ratio: percentile(pa, 99) / percentile(pb, 99) },
    ];
    return { title: 'XMPP adapter (Prosody MUC → Redis log)', rows };
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    await Promise.all(clients.map((c) => c.stop().catch(() => undefined)));
    await log.close();
    await server.stop();
  }
};
