import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ghostUserRegex, parseMatrixConfig, randomToken, registrationYaml } from '../../../adapters/matrix/config.js';
import { MatrixConfigError } from '../../../adapters/matrix/errors.js';
import { ghostUserId } from '../../../adapters/matrix/ghosts.js';

const appservice = {
  homeserverUrl: 'https://matrix.example.org',
  serverName: 'example.org',
  appservice: { asToken: 'a'.repeat(32), hsToken: 'h'.repeat(32), url: 'http://syncgate:9000' },
};

function problems(input: unknown): readonly string[] {
  try {
    parseMatrixConfig(input);
  } catch (err) {
    if (err instanceof MatrixConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('Matrix config', () => {
  it('applies defaults: appservice mode, ghost prefix, bot localpart, listener', () => {
    const config = parseMatrixConfig(appservice);
    expect(config.mode).toBe('appservice');
    expect(config.appservice).toMatchObject({ id: 'syncgate', ghostPrefix: '_sg_', botLocalpart: 'syncgate', listenHost: '0.0.0.0', listenPort: 9000 });
    expect(config.requestTimeoutMs).toBe(30_000);
  });

  it('reports every problem at once', () => {
    const found = problems({ mode: 'bot', homeserverUrl: 'ftp://x', serverName: 'example.org', bot: { userId: 'not-a-user' } });
    expect(found.some((p) => p.startsWith('/homeserverUrl'))).toBe(true);
    expect(found.some((p) => p.startsWith('/bot/userId'))).toBe(true);
    expect(problems({ ...appservice, appservice: undefined })).toEqual(['/appservice: required in appservice mode']);
    expect(problems({ mode: 'bot', homeserverUrl: 'https://m', serverName: 'm', bot: { userId: '@bot:m' } })).toEqual(['/bot: accessToken or password is required']);
    expect(problems({ ...appservice, appservice: { ...appservice.appservice, botLocalpart: '_sg_bot' } })).toEqual([
      '/appservice/botLocalpart: must not start with ghostPrefix (a ghost could take its name)',
    ]);
    expect(problems({ ...appservice, appservice: { ...appservice.appservice, hsToken: 'a'.repeat(32) } })).toEqual(['/appservice: asToken and hsToken must differ']);
  });

  it('writes a registration whose namespace covers our ghosts and bot and nobody else', () => {
    const config = parseMatrixConfig(appservice);
    const reg = parse(registrationYaml(config)) as Record<string, unknown>;
    expect(reg).toMatchObject({
      id: 'syncgate',
      url: 'http://syncgate:9000',
      as_token: 'a'.repeat(32),
      hs_token: 'h'.repeat(32),
      sender_localpart: 'syncgate',
      rate_limited: false,
      receive_ephemeral: true,
      'de.sorunome.msc2409.push_ephemeral': true,
      namespaces: { aliases: [], rooms: [] },
    });
    const users = (reg['namespaces'] as { users: { exclusive: boolean; regex: string }[] }).users;
    expect(users.every((u) => u.exclusive)).toBe(true);
    // Homeservers match start-anchored (Python re.match).
    const matches = (id: string) => users.some((u) => new RegExp(`^(?:${u.regex})`).test(id));
    expect(matches(ghostUserId('_sg_', 'xmpp:Carol@example.net', 'example.org'))).toBe(true);
    expect(matches('@syncgate:example.org')).toBe(true);
    expect(matches('@alice:example.org')).toBe(false);
    expect(matches('@_sg_x:evil.example')).toBe(false);
    expect(matches('@_sgx:example.org')).toBe(false);
    expect(ghostUserRegex({ serverName: 'example.org', appservice: { ghostPrefix: '_sg_' } })).toBe('@_sg_.*:example\\.org');
  });

  it('makes random tokens long enough for the schema', () => {
    const t = randomToken();
    expect(t.length).toBeGreaterThanOrEqual(32);
    expect(t).not.toBe(randomToken());
    expect(() => parseMatrixConfig({ ...appservice, appservice: { ...appservice.appservice, asToken: t, hsToken: randomToken() } })).not.toThrow();
  });
});
