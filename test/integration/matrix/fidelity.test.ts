/**
 * What a real homeserver (Synapse) does that users met (issue 12), against
 * the homeserver fake, which behaves like Synapse in these ways.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TRUNCATION_MARKER } from '../../../src/core/text.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { appendApi, botConfig, createEnv, Driver, matrixLink, messagesIn, startAdapter, waitForEvents, type Env } from './helpers.js';

let env: Env | undefined;
const adapters: MatrixAdapter[] = [];

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  await env?.close();
  env = undefined;
});

async function botSetup(overrides: Record<string, unknown> = {}): Promise<{ e: Env; adapter: MatrixAdapter; driver: Driver }> {
  const e = await createEnv();
  env = e;
  e.hs.registerUser('relay', 'relay-pw');
  const adapter = await startAdapter(e, botConfig(e, overrides));
  adapters.push(adapter);
  return { e, adapter, driver: new Driver(adapter, e.log, matrixLink(e)) };
}

describe('Matrix against a Synapse-like homeserver', () => {
  it('size rule: a body over the 65,536-byte event limit is delivered cut with the marker, never dead-lettered', async () => {
    const { e, driver } = await botSetup();
    // 33,000 Cyrillic characters: within the log's character limit, 66,000 bytes of UTF-8.
    const body = 'ж'.repeat(33_000);
    const event = await appendApi(e.log, { kind: 'message', content: { body, format: 'html', formatted: `<b>${body}</b>` } });
    const result = await driver.deliver(event);
    expect(result.status).toBe('delivered');
    const sent = messagesIn(e).at(-1);
    expect(String(sent?.content['body']).endsWith(TRUNCATION_MARKER)).toBe(true);
    expect(String(sent?.content['body']).length).toBeGreaterThan(20_000);
  });

  it('mentions: HTTP mentions go out as m.mentions with a pill; a pill-only mention from an older client comes in as a mention', async () => {
    const { e, driver } = await botSetup();
    const event = await appendApi(e.log, { kind: 'message', content: { body: 'ask @bob:fake.test', format: 'markdown', formatted: 'ask **@bob:fake.test**', mentions: ['matrix:@bob:fake.test'] } });
    expect((await driver.deliver(event)).status).toBe('delivered');
    const sent = messagesIn(e).at(-1);
    expect(sent?.content['m.mentions']).toEqual({ user_ids: ['@bob:fake.test'] });
    expect(String(sent?.content['formatted_body'])).toContain('<a href="https://matrix.to/#/@bob:fake.test">@bob:fake.test</a>');

    e.hs.sendAsUser(e.alice.userId, e.roomId, 'm.room.message', {
      msgtype: 'm.text',
      body: 'bob: see this',
      format: 'org.matrix.custom.html',
      formatted_body: '<a href="https://matrix.to/#/@bob:fake.test">bob</a>: see this',
    });
    const [inbound] = await waitForEvents(e.log, (es) => es.some((x) => x.kind === 'message' && x.content.body === 'bob: see this'), 'the pill-only mention in the log').then((es) =>
      es.filter((x) => x.kind === 'message' && x.content.body === 'bob: see this'),
    );
    expect(inbound?.kind === 'message' && inbound.content.mentions).toEqual(['matrix:@bob:fake.test']);
  });
});
