/**
 * An encrypted Matrix attachment through a real `syncgate serve` (bot mode,
 * Redis): a member's client (the independent Rust-crypto peer) sends an
 * AES-CTR encrypted file into the encrypted room; the event in the log
 * carries the absolute URL made from `encryptedMediaBaseUrl`, and the
 * gateway's own HTTP server answers it with the decrypted file — the URL an
 * XMPP or MQTT client gets, fetched without any token.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { LogEvent } from '../../src/core/event.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { cliRunner } from '../harness/cli.js';
import { createFakeHomeserver } from '../harness/fake-homeserver.js';
import { getFreePort, waitFor } from '../harness/free-port.js';
import { E2eePeer } from '../harness/matrix-e2ee-peer.js';
import { testPrefix } from '../harness/redis.js';

const run = cliRunner();
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const ADMIN = 'mx-e2ee-media-admin-token-0123456789';
const RELAY = '@relay:fake.test';

describe('Matrix encrypted attachment through the gateway', () => {
  it('a member\'s encrypted file reaches the log as the gateway\'s absolute media URL, which serves it decrypted', async () => {
    const hs = await createFakeHomeserver({ serverName: 'fake.test' });
    cleanup.push(() => hs.stop());
    const alice = hs.registerUser('alice', 'pw');
    hs.registerUser('relay', 'relay-pw');
    const roomId = hs.createRoom(alice.userId, { name: 'Secret', preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    const peer = await E2eePeer.login(hs.url, alice.userId, 'pw', 'ALICEPHONE');
    cleanup.push(() => peer.close());

    const prefix = testPrefix('mxe2eemedia');
    const httpPort = await getFreePort();
    const base = `http://127.0.0.1:${httpPort}`;
    const dir = await mkdtemp(join(tmpdir(), 'sg-mx-e2ee-media-'));
    const configFile = join(dir, 'syncgate.yaml');
    await writeFile(
      configFile,
      stringify({
        partitions: 2,
        redis: { url: inject('redisUrl'), prefix },
        http: { host: '127.0.0.1', port: httpPort, adminToken: ADMIN },
        log: { level: 'info' },
        replicaId: 'matrix-media-0',
        shutdownGraceMs: 1000,
        rooms: [{ id: 'secret', links: [{ endpoint: 'matrix', target: roomId }] }],
        adapters: {
          matrix: {
            type: 'matrix',
            mode: 'bot',
            homeserverUrl: hs.url,
            serverName: 'fake.test',
            stopGraceMs: 300,
            encryptedMediaBaseUrl: `${base}/v1/media/matrix`,
            bot: { userId: RELAY, password: 'relay-pw', syncTimeoutMs: 2000 },
            encryption: { mode: 'optional' },
          },
        },
      }),
    );
    const gateway = run(['serve', '--config', configFile], { SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET: 'the crypto store secret of this test' });
    cleanup.push(() => {
      gateway.proc.kill('SIGKILL');
    });
    const exited = () => (gateway.proc.exitCode !== null || gateway.proc.signalCode !== null ? new Error(`syncgate exited:\n${gateway.out.stdout}\n${gateway.out.stderr}`) : undefined);
    await waitFor(
      async () => {
        const res = await fetch(`${base}/v1/admin/status`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined);
        if (res?.status !== 200) return false;
        const st = ((await res.json()) as { adapters: Record<string, { ready: boolean; detail: { encryption?: { active: boolean } } }> }).adapters['matrix'];
        return st?.ready === true && st.detail.encryption?.active === true;
      },
      { timeoutMs: 60_000, what: 'the Matrix adapter ready with its crypto active', failFast: exited },
    );
    await waitFor(() => hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined, { timeoutMs: 30_000, what: 'the bridge device keys uploaded' });
    await peer.sync();

    const pdf = Buffer.from('%PDF-1.4 a small report that only the room may read\n');
    const { file } = await peer.uploadEncrypted(pdf);
    const sent = await peer.sendEncrypted(roomId, 'm.room.message', { msgtype: 'm.file', body: 'report.pdf', filename: 'report.pdf', file, info: { mimetype: 'application/pdf', size: pdf.length } });

    const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    cleanup.push(() => log.close());
    let event: LogEvent | undefined;
    await waitFor(
      async () => {
        event = (await log.read(undefined, { rooms: new Set(['secret']), limit: 100 })).events.find((e) => e.origin.ids['mx.eventId'] === sent);
        return event !== undefined;
      },
      { timeoutMs: 60_000, what: 'the encrypted file in the log', failFast: exited },
    );
    const attachment = event?.kind === 'message' ? event.content.attachments?.[0] : undefined;
    expect(attachment).toMatchObject({ mime: 'application/pdf', name: 'report.pdf', size: pdf.length });
    expect(attachment?.url.startsWith(`${base}/v1/media/matrix/`)).toBe(true);

    const res = await fetch(attachment?.url ?? '');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/pdf');
    expect(res.headers.get('content-disposition')).toBe("attachment; filename*=UTF-8''report.pdf");
    expect(Buffer.from(await res.arrayBuffer()).equals(pdf)).toBe(true);
  }, 180_000);
});
