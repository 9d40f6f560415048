/**
 * Application-service durability over the Redis log, with the completed
 * transaction ids in the log's state store (as the runtime wires it): a
 * gateway that dies while the homeserver pushes a transaction, and a 200
 * that is lost, both end with every event in the log exactly once.
 */
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import type { IngestSink } from '../../../src/core/adapter.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { AdapterStore } from '../../../adapters/matrix/store.js';
import { waitFor } from '../../harness/free-port.js';
import { testPrefix } from '../../harness/redis.js';
import { appserviceConfig, createEnv, HS_TOKEN, registerAppservice, roomEvents, startAdapter, waitForEvents, waitForTransactions, type Env } from './helpers.js';

let env: Env;
const adapters: MatrixAdapter[] = [];
const releases: (() => void)[] = [];

beforeEach(async () => {
  env = await createEnv({ redis: { url: inject('redisUrl'), prefix: testPrefix('mxas') } });
});

afterEach(async () => {
  for (const r of releases.splice(0)) r();
  for (const a of adapters.splice(0)) await a.stop();
  await env.close();
});

function bodies(events: Awaited<ReturnType<typeof roomEvents>>): string[] {
  return events.flatMap((e) => (e.kind === 'message' ? [e.content.body] : []));
}

describe('Matrix adapter, appservice mode: crashes and retries', () => {
  it('a gateway killed mid-transaction gets the same transaction again and appends each event once', async () => {
    const config = appserviceConfig(env);
    registerAppservice(env, config);
    const real = createIngestSink({ log: env.log, logger: env.logger });
    let messages = 0;
    let hung = false;
    const hanging: IngestSink = {
      ...real,
      ingest: (draft, options) => {
        if (draft.kind === 'message' && ++messages === 2) {
          hung = true;
          return new Promise((resolve) => releases.push(() => resolve({ status: 'ignored', reason: 'released after the test' })));
        }
        return real.ingest(draft, options);
      },
    };
    const dying = await startAdapter(env, config, { sink: hanging });
    adapters.push(dying);
    await waitForTransactions(env);

    // Queue three messages into one transaction, then let the homeserver push it.
    env.hs.setAppServiceUrl('syncgate', null);
    const sent = ['one', 'two', 'three'].map((body) => env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body }));
    env.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${dying.listenAddress()?.port}`);
    await waitFor(() => hung, { timeoutMs: 10_000, what: 'the transaction to reach its second event' });
    await dying.stop();
    expect(bodies(await roomEvents(env.log))).toEqual(['one']);

    const restarted = await startAdapter(env, config);
    adapters.push(restarted);
    const events = await waitForEvents(env.log, (es) => es.length >= 3, 'all three messages');
    await waitForTransactions(env);
    expect(events.map((e) => e.origin.ids['mx.eventId'])).toEqual(sent);
    expect(bodies(events)).toEqual(['one', 'two', 'three']);
    const txn = env.hs.appServiceTransactions('syncgate').find((t) => JSON.stringify(t.body).includes(sent[0] ?? '-'));
    expect(txn?.attempts[0]?.kind).toBe('network-error');
    expect(txn?.attempts.at(-1)).toEqual({ kind: 'status', status: 200 });
    expect(await new AdapterStore(env.log.state, 'matrix:matrix').isCompleted(txn?.txnId ?? '')).toBe(true);
    expect(restarted.status().detail?.['inbound']).toMatchObject({ appended: 2, duplicate: 1 });
  });

  it('a transaction whose 200 was lost is answered from the stored transaction ids, also after a restart', async () => {
    const config = appserviceConfig(env);
    registerAppservice(env, config);
    const first = await startAdapter(env, config);
    adapters.push(first);
    await waitForTransactions(env);

    env.hs.failAppServiceNext(1, { afterDelivery: true });
    const eventId = env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'ack lost' });
    await waitForTransactions(env);
    const txn = env.hs.appServiceTransactions('syncgate').at(-1);
    expect(txn?.attempts).toEqual([{ kind: 'ack-lost', status: 200 }, { kind: 'status', status: 200 }]);
    expect((await roomEvents(env.log)).map((e) => e.origin.ids['mx.eventId'])).toEqual([eventId]);

    // A new process (state in Redis) gets the same transaction once more: 200, nothing processed.
    await first.stop();
    const second = await startAdapter(env, config);
    adapters.push(second);
    await waitForTransactions(env);
    const before = (second.status().detail?.['inbound'] as { events: number }).events;
    const res = await fetch(`http://127.0.0.1:${second.listenAddress()?.port}/_matrix/app/v1/transactions/${txn?.txnId}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${HS_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(txn?.body),
    });
    expect([res.status, await res.json()]).toEqual([200, {}]);
    expect((second.status().detail?.['inbound'] as { events: number }).events).toBe(before);
    expect((await roomEvents(env.log)).length).toBe(1);
  });
});
