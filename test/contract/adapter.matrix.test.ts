// The adapter contract on the Matrix adapter (application-service mode)
// against the homeserver fake over real HTTP: a Matrix room linked to the
// gateway room, a Matrix user as the native peer.
import { parse } from 'yaml';
import type { Adapter } from '../../src/core/adapter.js';
import type { MatrixAdapter } from '../../adapters/matrix/index.js';
import { parseMatrixConfig, registrationYaml } from '../../adapters/matrix/config.js';
import { CONTENT_KEY } from '../../adapters/matrix/normalise.js';
import { createFakeHomeserver, type AppServiceRegistration, type FakeHomeserver } from '../harness/fake-homeserver.js';
import { adapterContract, until } from './adapter.contract.js';

let hs: FakeHomeserver;
let seq = 0;
const AS_ID = 'syncgate';

adapterContract({
  type: 'matrix',
  async start() {
    hs = await createFakeHomeserver({ serverName: 'fake.test', appServiceRetry: { initialMs: 50, maxMs: 500 } });
    hs.registerUser('bob', 'pw');
  },
  stop: async () => hs?.stop(),
  port: () => hs.port,
  async world(_room, proxy) {
    seq++;
    const bob = '@bob:fake.test';
    const roomId = hs.createRoom(bob, { name: `contract ${seq}` });
    const config = {
      mode: 'appservice',
      homeserverUrl: proxy.url('http'),
      serverName: hs.serverName,
      requestTimeoutMs: 5_000,
      stopGraceMs: 300,
      appservice: { id: AS_ID, asToken: 'as-token-0123456789abcdef', hsToken: 'hs-token-0123456789abcdef', url: 'http://127.0.0.1:9', listenHost: '127.0.0.1', listenPort: 0 },
    };
    // The homeserver learns of the application service from the registration the CLI writes.
    if (seq === 1) hs.registerAppService({ ...(parse(registrationYaml(parseMatrixConfig(config))) as AppServiceRegistration), url: null });
    const fromBridge = () => hs.events(roomId).filter((e) => e.type === 'm.room.message' && e.sender !== bob);
    const textOf = (content: Record<string, unknown>) => (typeof content['body'] === 'string' ? content['body'] : '');
    const transactionsWith = (body: string) => hs.appServiceTransactions(AS_ID).filter((t) => JSON.stringify(t.body).includes(body));
    return {
      config,
      link: { endpoint: 'matrix', target: roomId },
      peer: {
        send: async (body) => void hs.sendAsUser(bob, roomId, 'm.room.message', { msgtype: 'm.text', body }),
        received: () => fromBridge().map((e) => ({ body: textOf(e.content), eventId: typeof e.content[CONTENT_KEY] === 'string' ? e.content[CONTENT_KEY] : undefined })),
      },
      async afterStart(adapter: Adapter) {
        const address = (adapter as MatrixAdapter).listenAddress();
        if (!address) throw new Error('the application service does not listen');
        hs.setAppServiceUrl(AS_ID, `http://127.0.0.1:${address.port}`);
      },
      // The homeserver pushes our own event back to the application service in a transaction.
      async echo(delivered) {
        const body = 'content' in delivered ? delivered.content.body : '\0';
        await until(() => transactionsWith(body).some((t) => t.delivered), 'our own event pushed back and answered');
      },
      // The application service's 200 is lost: the homeserver sends the same transaction again.
      async sendTwice(body, harness) {
        hs.failAppServiceNext(1, { afterDelivery: true, appServiceId: AS_ID });
        hs.sendAsUser(bob, roomId, 'm.room.message', { msgtype: 'm.text', body });
        await until(() => transactionsWith(body).some((t) => t.delivered && t.attempts.length >= 2), 'the transaction sent twice and answered');
        await harness.untilLogged(body);
      },
      async close() {
        hs.setAppServiceUrl(AS_ID, null);
      },
    };
  },
});
