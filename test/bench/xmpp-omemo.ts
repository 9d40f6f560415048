/**
 * OMEMO 1:1 through the XMPP adapter (real Prosody, log in Redis) against clear
 * 1:1 in the same run (issue 26): in, a python-omemo contact's message (after
 * its client sent it) → durably appended, encrypted vs clear; out, deliver()
 * to an encrypting contact (encrypt, send, server ack) vs to a clear one.
 * Paced, one message at a time, so the figures are the paths' own.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { IngestSink } from '../../src/core/adapter.js';
import type { EventDraft } from '../../src/core/event.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createSealedStore } from '../../src/runtime/sealed-store.js';
import { createXmppAdapter, parseXmppConfig, stateCatchupStore } from '../../adapters/xmpp/index.js';
import { OmemoPeer } from '../harness/omemo-peer.js';
import { startProsody } from '../harness/prosody.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const sorted = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);

export const benchXmppOmemo: Bench = async (ctx) => {
  const n = ctx.quick ? 20 : 100;
  const server = await startProsody();
  const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: ctx.redisUrl, prefix: testPrefix('bench-omemo') } });
  const stops: Array<() => Promise<unknown>> = [];
  try {
    await Promise.all(['bridge', 'alice', 'bob'].map((u) => server.createUser(u, `${u}-pw`)));
    const bridge = `bridge@${server.domain}`;
    await log.rooms.put({ id: 'enc', links: [{ endpoint: 'xmpp', target: `alice@${server.domain}`, options: { type: 'chat' } }] });
    await log.rooms.put({ id: 'clear', links: [{ endpoint: 'xmpp', target: `bob@${server.domain}`, options: { type: 'chat' } }] });
    const alice = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-pw' });
    stops.push(() => alice.stop());
    const bob = await OmemoPeer.start(server, { localpart: 'bob', password: 'bob-pw' });
    stops.push(() => bob.stop());

    const appendedAt = new Map<string, number>();
    const inner = createIngestSink({ log, logger: silentLogger() });
    const sink: IngestSink = {
      ...inner,
      async ingest(draft: EventDraft, options) {
        const result = await inner.ingest(draft, options);
        if (result.status === 'appended' && 'content' in draft) appendedAt.set(draft.content.body, Date.now());
        return result;
      },
    };
    const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
    stops.push(async () => links.close());
    const adapter = createXmppAdapter({
      name: 'xmpp',
      config: parseXmppConfig({ service: server.service, jid: bridge, password: 'bridge-pw', selfPingIntervalMs: 0, omemoSecret: 'bench-omemo-secret-0123456789' }),
      log: silentLogger(),
      sink,
      links,
      state: log.state,
      catchup: stateCatchupStore(log.state, 'xmpp-catchup:xmpp'),
      sealed: (ns, secret) => createSealedStore(log.state, ns, secret),
    });
    await adapter.start();
    stops.unshift(() => adapter.stop());
    if (!adapter.status().ready) throw new Error('the XMPP adapter did not get ready');
    await waitFor(async () => (await alice.devices(bridge)).ids.length > 0, { what: 'the bridge device seen by alice', timeoutMs: 30_000 });

    // In: from the moment the contact's client has sent it to the moment it is appended.
    const inbound = async (peer: OmemoPeer, encrypted: boolean): Promise<{ latencies: number[]; total: number }> => {
      const latencies: number[] = [];
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const body = `${encrypted ? 'enc' : 'clear'} in ${i} ${randomUUID().slice(0, 8)}`;
        const mark = peer.events.length;
        peer.send({ cmd: encrypted ? 'send' : 'send-clear', to: bridge, body, id: randomUUID() });
        const sent = await peer.waitFor((e, j) => j >= mark && (e.event === 'sent' || e.event === 'error'), 'the peer to send');
        if (sent.event === 'error') throw new Error(`the peer could not send: ${String(sent['error'])}`);
        // Wall clock on both sides (one machine): the peer stamps the moment it hands the stanza to its socket.
        const sentAt = sent['at'] as number;
        await waitFor(() => appendedAt.has(body), { what: 'the message appended', timeoutMs: 30_000, intervalMs: 1 });
        latencies.push((appendedAt.get(body) ?? sentAt) - sentAt);
      }
      return { latencies: sorted(latencies), total: performance.now() - t0 };
    };
    // Warm-up: the encrypted session (key exchange) and the clear path, not measured.
    await alice.sendEncrypted(bridge, 'warm-up');
    await waitFor(() => appendedAt.has('warm-up'), { what: 'the warm-up message', timeoutMs: 30_000 });
    const inEnc = await inbound(alice, true);
    const inClear = await inbound(bob, false);

    // Out: deliver() from call to confirmation (the server's XEP-0198 ack).
    const outbound = async (room: string): Promise<{ latencies: number[]; total: number }> => {
      const latencies: number[] = [];
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const { eventId } = await log.append({
          v: 1,
          idem: `bench:${randomUUID()}`,
          room,
          sender: { uid: 'api:carol', proto: 'api', native: 'carol/bench', display: 'Carol', auth: 'api-token' },
          origin: { proto: 'api', via: 'api', ids: { 'api.txnId': randomUUID() } },
          ts: { received: Date.now() },
          kind: 'message',
          content: { body: `out ${i}` },
        } as EventDraft);
        const event = await log.getEvent(room, eventId);
        if (!event) throw new Error('appended event not found');
        const link = (await log.rooms.get(room))?.links[0];
        if (!link) throw new Error(`room ${room} has no link`);
        const t = performance.now();
        const result = await adapter.deliver(event, { room, link }, { attempt: 0, references: {}, content: { body: `out ${i}` } });
        if (result.status !== 'delivered') throw new Error(`delivery to ${room}: ${result.status} ${'reason' in result ? result.reason : ''}`);
        latencies.push(performance.now() - t);
      }
      return { latencies: sorted(latencies), total: performance.now() - t0 };
    };
    const outEnc = await outbound('enc');
    const outClear = await outbound('clear');
    await waitFor(() => alice.messages().filter((m) => m.encrypted && m.body.startsWith('<Carol> out ')).length === n, { what: 'alice decrypting every outbound message', timeoutMs: 60_000 });

    const row = (name: string, e: number, c: number, unit: string, extra: Partial<BenchRow> = {}): BenchRow => ({ name, value: e, unit, baseline: c, ratio: e / c, ...extra });
    const rows: BenchRow[] = [
      row('in: contact → appended rate', (n / inEnc.total) * 1000, (n / inClear.total) * 1000, 'msg/s', {
        note: `${n} paced 1:1 messages from python-omemo (its own encryption and device list fetch per message included); baseline: the same in clear (a second contact)`,
      }),
      row('in: latency p50', percentile(inEnc.latencies, 50), percentile(inClear.latencies, 50), 'ms', { note: "the contact's client hands it to its socket → durably appended (wall clock, ms resolution)" }),
      row('in: latency p99', percentile(inEnc.latencies, 99), percentile(inClear.latencies, 99), 'ms'),
      row('out: deliver rate', (n / outEnc.total) * 1000, (n / outClear.total) * 1000, 'msg/s', { note: `${n} paced deliveries (log append included); baseline: to a contact in clear` }),
      row('out: deliver latency p50', percentile(outEnc.latencies, 50), percentile(outClear.latencies, 50), 'ms', { note: 'deliver() call → XEP-0198 ack; encrypted: ratchet step, AES-GCM, sealed commit' }),
      row('out: deliver latency p99', percentile(outEnc.latencies, 99), percentile(outClear.latencies, 99), 'ms'),
    ];
    return { title: 'XMPP OMEMO 1:1 (encrypted vs clear, Prosody + python-omemo, Redis log)', rows };
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
    await log.close();
    await server.stop();
  }
};
