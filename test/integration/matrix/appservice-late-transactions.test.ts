/**
 * Appservice mode: transactions the adapter cannot answer at once.
 *
 * - Encrypted room, the adapter starting again: its listener is up before
 *   the bridge device is open (login, crypto store, keys), so the homeserver
 *   can push a transaction that waited while the gateway was down into that
 *   gap. Its encrypted events must be bridged, once, as soon as the device
 *   is open — not dropped as "encrypted, no crypto".
 * - A transaction handled after the homeserver stopped waiting for the
 *   answer (its request timed out): the homeserver backs off before sending
 *   it again (Synapse: doubling up to 512 s) and holds back everything after
 *   it; the adapter pings it (spec v1.7), which makes it retry at once
 *   (Synapse 1.132+), answered 200 from the transaction record.
 *
 * The homeserver's backoff is made longer than any wait here: a transaction
 * left to it fails the test.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import type { LogEvent } from '../../../src/core/event.js';
import { getFreePort, waitFor } from '../../harness/free-port.js';
import type { AppServiceTransactionRecord } from '../../harness/fake-homeserver.js';
import type { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { AS_EXTENSIONS, closeWorld, createE2eeAdapter, encryptRoom, memberPeer, pointHomeserverAt, registerOwnAppservice, STORE_SECRET } from './e2ee-room.js';
import { appserviceConfig, createEnv, registerAppservice, startAdapter, waitForEvents, waitForTransactions, type Env } from './helpers.js';

/** Longer than any wait below: a transaction that has to wait out a backoff fails the test. */
const NO_RETRY_IN_TIME = { initialMs: 600_000, maxMs: 600_000 };

let env: Env | undefined;
const adapters: MatrixAdapter[] = [];
const peers: E2eePeer[] = [];

afterEach(async () => {
  if (env) await closeWorld(env, adapters, peers);
  env = undefined;
});

function texts(events: LogEvent[]): string[] {
  return events.filter((ev) => ev.kind === 'message').map((ev) => ('content' in ev ? ev.content.body : ''));
}

function encryption(adapter: MatrixAdapter): { active?: boolean; device?: unknown } {
  return (adapter.status().detail?.['encryption'] ?? {}) as { active?: boolean; device?: unknown };
}

function transactionRequests(adapter: MatrixAdapter): number {
  return (adapter.status().detail?.['transactions'] as { requests?: number } | undefined)?.requests ?? 0;
}

describe('Matrix adapter, appservice mode, encrypted room, a transaction pushed while the bridge device is being opened', () => {
  it('is bridged once the device is open, in order and once, without waiting for the homeserver\'s retry backoff', async () => {
    // A homeserver that waits as long as Synapse for an answer (60 s), and whose backoff outlasts the test.
    const e = await createEnv({ hs: { ...AS_EXTENSIONS, appServiceRetry: NO_RETRY_IN_TIME, appServiceRequestTimeoutMs: 60_000 } });
    env = e;
    encryptRoom(e);
    const alice = await memberPeer(e);
    peers.push(alice);
    const port = await getFreePort();
    const config = appserviceConfig(e, { listenPort: port }, { encryption: { storeSecret: STORE_SECRET } });
    registerOwnAppservice(e, config);

    const first = createE2eeAdapter(e, config);
    adapters.push(first);
    await first.start();
    pointHomeserverAt(e, first);
    await waitFor(() => encryption(first).active === true && first.status().ready, { timeoutMs: 30_000, what: 'the bridge device active' });
    await alice.sync();
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the restart' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('before the restart'), 'the first message bridged', 30_000);
    await waitForTransactions(e);

    // The gateway goes away; the homeserver keeps what comes meanwhile (no push while it has no URL).
    e.hs.setAppServiceUrl('syncgate', null);
    await first.stop();
    adapters.splice(adapters.indexOf(first), 1);
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'while the bridge was down' });

    // The next start is held at the bridge device's login, its listener already up.
    const login = e.hs.holdRequests('/_matrix/client/v3/login');
    const second = createE2eeAdapter(e, config);
    adapters.push(second);
    const starting = second.start();
    await waitFor(() => second.listenAddress() !== undefined, { timeoutMs: 30_000, what: 'the restarted listener up' });
    e.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${port}`);
    await waitFor(() => transactionRequests(second) >= 1, { timeoutMs: 30_000, what: 'the waiting transaction pushed to the listener' });
    await waitFor(() => login.arrived >= 1, { timeoutMs: 30_000, what: 'the bridge device login held' });
    expect(encryption(second).device).toBeUndefined();

    login.release();
    await starting;
    const events = await waitForEvents(e.log, (evs) => texts(evs).includes('while the bridge was down'), 'the message sent while down, bridged once the device is open', 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}; inbound: ${JSON.stringify(second.status().detail?.['inbound'])}; pushes: ${JSON.stringify(e.hs.appServiceTransactions('syncgate').map((t) => [t.txnId, t.attempts, t.retriedBy]))}`);
    });
    expect(texts(events)).toEqual(['before the restart', 'while the bridge was down']);
    // The homeserver's transaction ends with a 200 (a ping or the answer itself), and nothing is bridged twice.
    await waitFor(() => e.hs.appServiceTransactions('syncgate').every((t) => t.delivered), { timeoutMs: 30_000, what: 'every transaction answered 200' });
    await waitFor(() => encryption(second).active === true, { timeoutMs: 30_000, what: 'the bridge device active again' });
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'after the restart' });
    const after = await waitForEvents(e.log, (evs) => texts(evs).includes('after the restart'), 'the next message', 30_000);
    expect(texts(after)).toEqual(['before the restart', 'while the bridge was down', 'after the restart']);
  });
});

describe('Matrix adapter, appservice mode, a transaction stored after the homeserver stopped waiting for the answer', () => {
  it('pings the homeserver, which sends it again at once (answered 200 from the record), and the transactions after it flow', async () => {
    const e = await createEnv({ hs: { appServiceRetry: NO_RETRY_IN_TIME, appServiceRequestTimeoutMs: 1_000 } });
    env = e;
    const port = await getFreePort();
    const config = appserviceConfig(e, { listenPort: port });
    registerAppservice(e, config);
    // The registration's URL from the start, so that the ping at start reaches the listener.
    e.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${port}`);
    const adapter = await startAdapter(e, config);
    adapters.push(adapter);
    await waitFor(() => adapter.status().ready && (adapter.status().detail?.['ping'] as { ok?: boolean } | undefined)?.ok === true, { timeoutMs: 30_000, what: 'the adapter ready, its ping at start answered' });
    await waitForTransactions(e);
    const pingsAtStart = e.hs.appServicePings('syncgate');

    // Bob's first message makes the adapter ask for his display name: held, so the homeserver's request times out.
    const lookup = e.hs.holdRequests('/state/m.room.member/');
    e.hs.sendAsUser(e.bob.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'answered too late' });
    const late = (): AppServiceTransactionRecord | undefined => e.hs.appServiceTransactions('syncgate').find((t) => JSON.stringify(t.body).includes('answered too late'));
    const abandoned = (): number => (adapter.status().detail?.['transactions'] as { abandoned?: number } | undefined)?.abandoned ?? 0;
    await waitFor(() => (late()?.attempts.length ?? 0) >= 1 && lookup.arrived >= 1 && abandoned() >= 1, { timeoutMs: 30_000, what: 'the homeserver giving up on the transaction while the adapter works on it' });
    expect(late()?.attempts[0]?.kind).toBe('network-error');
    e.hs.sendAsUser(e.bob.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'behind it' });
    lookup.release();

    await waitFor(() => late()?.delivered === true, { timeoutMs: 30_000, what: 'the transaction sent again and answered 200' }).catch((err: unknown) => {
      throw new Error(`${String(err)}; pushes: ${JSON.stringify(e.hs.appServiceTransactions('syncgate').map((t) => [t.txnId, t.attempts, t.retriedBy]))}; adapter: ${JSON.stringify(adapter.status().detail?.['transactions'])}; log: ${JSON.stringify(e.lines.slice(-8).map((l) => l.msg))}`);
    });
    expect(late()?.retriedBy).toEqual(['ping']);
    expect(e.hs.appServicePings('syncgate')).toBe(pingsAtStart + 1);
    const events = await waitForEvents(e.log, (evs) => texts(evs).includes('behind it'), 'the message behind it', 30_000);
    expect(texts(events)).toEqual(['answered too late', 'behind it']);
    expect(abandoned()).toBe(1);
  });
});
