import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENV_OVERRIDES, ignoredServiceLinks, loadConfig, resolveConfig } from '../../src/config/index.js';
import { isSyncgateError } from '../../src/core/errors.js';
import { K8S_REDIS_SERVICE_LINKS, K8S_SYNCGATE_SERVICE_LINKS } from '../fixtures/k8s.js';

describe('config', () => {
  it('fills defaults and freezes the result', () => {
    const config = resolveConfig({});
    expect(config.partitions).toBe(16);
    expect(config.redis).toBeUndefined();
    expect(config.http.port).toBe(8080);
    expect(config.retention.idTtlDays).toBe(30);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.http.rateLimit)).toBe(true);
  });

  it('applies SYNCGATE_* overrides over the file, converting types', () => {
    const config = resolveConfig(
      { http: { port: 9000 }, redis: { url: 'redis://file:6379' } },
      { SYNCGATE_HTTP_PORT: '9100', SYNCGATE_REDIS_URL: 'redis://env:6379', SYNCGATE_PARTITIONS: '8', SYNCGATE_ADMIN_TOKEN: 'a-long-enough-admin-token' },
    );
    expect(config.http.port).toBe(9100);
    expect(config.redis).toEqual({ url: 'redis://env:6379', prefix: 'sg:', waitReplicas: 0, waitTimeoutMs: 2000 });
    expect(config.partitions).toBe(8);
    expect(config.http.adminToken).toBe('a-long-enough-admin-token');
  });

  it('takes a Redis Cluster seed list as redis.cluster.nodes, instead of (never beside) redis.url', () => {
    const config = resolveConfig({ redis: { cluster: { nodes: ['10.0.0.1:7000', 'redis://10.0.0.2:7001'] } } });
    expect(config.redis).toEqual({ cluster: { nodes: ['10.0.0.1:7000', 'redis://10.0.0.2:7001'], tls: false }, prefix: 'sg:', waitReplicas: 0, waitTimeoutMs: 2000 });
    const problemsOf = (raw: unknown): string => {
      try {
        resolveConfig(raw);
      } catch (err) {
        expect(isSyncgateError(err, 'SG_ERR_CONFIG_INVALID')).toBe(true);
        return (isSyncgateError(err) ? (err.details?.['problems'] as string[]) : []).join('\n');
      }
      throw new Error('expected a config error');
    };
    expect(problemsOf({ redis: { url: 'redis://a:6379', cluster: { nodes: ['a:7000'] } } })).toMatch(/exactly one of redis\.url .* redis\.cluster\.nodes/);
    expect(problemsOf({ redis: { prefix: 'x:' } })).toMatch(/exactly one of redis\.url .* redis\.cluster\.nodes/);
    expect(problemsOf({ redis: { cluster: { nodes: [] } } })).toMatch(/\/redis\/cluster\/nodes/);
    expect(problemsOf({ redis: { cluster: { nodes: ['no-port'] } } })).toMatch(/\/redis\/cluster\/nodes\/0/);
  });

  it('takes the cluster seed list from SYNCGATE_REDIS_CLUSTER_NODES, comma separated', () => {
    const config = resolveConfig({ redis: { prefix: 'x:' } }, { SYNCGATE_REDIS_CLUSTER_NODES: ' 10.0.0.1:7000, redis://10.0.0.2:7001 ,' });
    expect(config.redis?.cluster?.nodes).toEqual(['10.0.0.1:7000', 'redis://10.0.0.2:7001']);
    expect(config.redis?.prefix).toBe('x:');
    // a malformed seed is named by its place in the list
    expect(() => resolveConfig({}, { SYNCGATE_REDIS_CLUSTER_NODES: 'a:7000,no-port' })).toThrow(/\/redis\/cluster\/nodes\/1/);
  });

  it('takes Redis Sentinel as redis.sentinel (nodes, name, its own password, tls), from the file or the environment, never beside another Redis', () => {
    const config = resolveConfig({ redis: { sentinel: { nodes: ['s1:26379', 's2:26379'], name: 'mymaster' }, password: 'master-secret' } });
    expect(config.redis).toEqual({ sentinel: { nodes: ['s1:26379', 's2:26379'], name: 'mymaster', tls: false }, password: 'master-secret', prefix: 'sg:', waitReplicas: 0, waitTimeoutMs: 2000 });
    const fromEnv = resolveConfig(
      {},
      { SYNCGATE_REDIS_SENTINEL_NODES: 's1:26379,s2:26379,s3:26379', SYNCGATE_REDIS_SENTINEL_NAME: 'main', SYNCGATE_REDIS_SENTINEL_PASSWORD: 'sentinel-secret' },
    );
    expect(fromEnv.redis?.sentinel).toEqual({ nodes: ['s1:26379', 's2:26379', 's3:26379'], name: 'main', password: 'sentinel-secret', tls: false });
    expect(() => resolveConfig({ redis: { url: 'redis://a:6379', sentinel: { nodes: ['s:26379'], name: 'm' } } })).toThrow(/exactly one of redis\.url .* redis\.sentinel/);
    expect(() => resolveConfig({ redis: { sentinel: { nodes: ['s:26379'] } } })).toThrow(/\/redis\/sentinel/);
  });

  it('reports every violation at once', () => {
    try {
      resolveConfig({ partitions: 0, http: { port: 'nope', bogus: 1 }, redis: { url: 'http://x' }, extra: true }, { SYNCGATE_NOPE: '1' });
      throw new Error('expected a config error');
    } catch (err) {
      expect(isSyncgateError(err, 'SG_ERR_CONFIG_INVALID')).toBe(true);
      const problems = (isSyncgateError(err) ? (err.details?.['problems'] as string[]) : []).join('\n');
      expect(problems).toMatch(/SYNCGATE_NOPE/);
      expect(problems).toMatch(/\/partitions/);
      expect(problems).toMatch(/\/http\/port/);
      expect(problems).toMatch(/\/redis\/url/);
      expect(problems).toMatch(/bogus|\/http/);
      expect(problems).toMatch(/extra|\//);
    }
  });

  it('loads YAML files and reports unreadable or malformed ones with SG_ERR_CONFIG_FILE', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sgcfg-'));
    const good = join(dir, 'good.yaml');
    await writeFile(good, 'partitions: 4\nrooms:\n  - id: ops\n    links:\n      - endpoint: xmpp\n        target: ops@conference.example.org\n');
    const config = await loadConfig({ file: good });
    expect(config.partitions).toBe(4);
    expect(config.rooms[0]?.links[0]?.target).toBe('ops@conference.example.org');
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'partitions: [\n');
    await expect(loadConfig({ file: bad })).rejects.toMatchObject({ code: 'SG_ERR_CONFIG_FILE' });
    await expect(loadConfig({ file: join(dir, 'missing.yaml') })).rejects.toMatchObject({ code: 'SG_ERR_CONFIG_FILE' });
  });

  // What Kubernetes injects for the chart's Service and a second release's `syncgate-redis`.
  const K8S_SERVICE_LINKS = { ...K8S_SYNCGATE_SERVICE_LINKS, ...K8S_REDIS_SERVICE_LINKS };

  it('ignores the service-link variables Kubernetes injects for a Service named syncgate', () => {
    const config = resolveConfig({}, { ...K8S_SERVICE_LINKS, SYNCGATE_HTTP_PORT: '9100' });
    expect(config.http.port).toBe(9100);
    expect(ignoredServiceLinks(K8S_SERVICE_LINKS)).toEqual(Object.keys(K8S_SERVICE_LINKS).sort());
  });

  it('still refuses a misspelt setting, or a service-link name whose value is not one, next to them', () => {
    const problemsOf = (env: Record<string, string>) => {
      try {
        resolveConfig({}, { ...K8S_SERVICE_LINKS, ...env });
      } catch (err) {
        return isSyncgateError(err) ? (err.details?.['problems'] as string[]) : [];
      }
      return [];
    };
    expect(problemsOf({ SYNCGATE_HTTP_PROT: '1' })).toEqual(['environment variable SYNCGATE_HTTP_PROT is not a known setting']);
    // A port number where Kubernetes would write tcp://host:port: someone meant a setting.
    expect(problemsOf({ SYNCGATE_MQTT_PORT: '1883' })).toEqual(['environment variable SYNCGATE_MQTT_PORT is not a known setting']);
    expect(problemsOf({ SYNCGATE_SERVICE_HOST: 'not an address' })).toEqual(['environment variable SYNCGATE_SERVICE_HOST is not a known setting']);
  });

  it('never shows a secret\'s value in a config problem', () => {
    const secrets = ['short-secret', 'hunter2-password'];
    try {
      resolveConfig({ http: { adminToken: 'short-secret' }, redis: { url: 'http://u:hunter2-password@redis:6379' } }, {});
      throw new Error('expected a config error');
    } catch (err) {
      expect(isSyncgateError(err, 'SG_ERR_CONFIG_INVALID')).toBe(true);
      const text = isSyncgateError(err) ? `${err.message}\n${JSON.stringify(err.details)}` : '';
      expect(text).toMatch(/\/http\/adminToken/);
      expect(text).toMatch(/\/redis\/url/);
      for (const secret of secrets) expect(text).not.toContain(secret);
    }
    // non-secret values are still shown: they help
    expect(() => resolveConfig({ http: { port: 70000 } })).toThrow(/\(got 70000\)/);
  });

  // Adapters named as an operator with two XMPP servers, a homeserver and a broker might name them.
  const ADAPTERS = {
    'xmpp-eu': { type: 'xmpp', service: 'xmpp://xmpp.example.org:5222', jid: 'bridge@example.org' },
    hs: { type: 'matrix', homeserverUrl: 'http://synapse:8008', serverName: 'example.org', appservice: { url: 'http://syncgate:9000' } },
    bot: { type: 'matrix', mode: 'bot', homeserverUrl: 'http://synapse:8008', serverName: 'example.org', bot: { userId: '@bridge:example.org' } },
    broker: { type: 'mqtt', url: 'mqtt://broker:1883', username: 'gw', clientId: 'syncgate-gw' },
  };

  it('takes every adapter secret from SYNCGATE_ADAPTER_<NAME>_<SECRET>, whatever the adapter is called', () => {
    const config = resolveConfig(
      { adapters: ADAPTERS },
      {
        SYNCGATE_ADAPTER_XMPP_EU_PASSWORD: 'xmpp-secret',
        SYNCGATE_ADAPTER_HS_AS_TOKEN: 'as-token-0123456789abcdef',
        SYNCGATE_ADAPTER_HS_HS_TOKEN: 'hs-token-0123456789abcdef',
        SYNCGATE_ADAPTER_BOT_ACCESS_TOKEN: 'bot-access-token',
        SYNCGATE_ADAPTER_BROKER_PASSWORD: 'mqtt-secret',
        SYNCGATE_ADAPTER_BROKER_URL: 'mqtts://gw:pw@broker:8883',
      },
    );
    const section = (name: string) => config.adapters[name]?.config as unknown as Record<string, Record<string, unknown> | string>;
    expect(section('xmpp-eu')['password']).toBe('xmpp-secret');
    expect(section('hs')['appservice']).toMatchObject({ asToken: 'as-token-0123456789abcdef', hsToken: 'hs-token-0123456789abcdef' });
    expect(section('bot')['bot']).toMatchObject({ accessToken: 'bot-access-token' });
    expect(section('broker')['password']).toBe('mqtt-secret');
    expect(section('broker')['url']).toBe('mqtts://gw:pw@broker:8883');
  });

  it('reads every secret from <VARIABLE>_FILE (a mounted Secret), and says which variable is wrong', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sgsecret-'));
    const file = async (name: string, text: string) => {
      const path = join(dir, name);
      await writeFile(path, text);
      return path;
    };
    const config = resolveConfig(
      { adapters: ADAPTERS },
      {
        SYNCGATE_ADMIN_TOKEN_FILE: await file('admin', 'admin-token-from-a-file-0123\n'),
        SYNCGATE_REDIS_URL_FILE: await file('url', 'redis://redis:6379/0\n'),
        SYNCGATE_REDIS_PASSWORD_FILE: await file('redis', 'redis-pass'),
        SYNCGATE_ADAPTER_XMPP_EU_PASSWORD_FILE: await file('xmpp', 'xmpp-pass\n'),
        SYNCGATE_ADAPTER_HS_AS_TOKEN_FILE: await file('as', 'as-token-0123456789abcdef\n'),
        SYNCGATE_ADAPTER_HS_HS_TOKEN_FILE: await file('hs', 'hs-token-0123456789abcdef\n'),
        SYNCGATE_ADAPTER_BOT_PASSWORD_FILE: await file('bot', 'bot-password\n'),
      },
    );
    expect(config.http.adminToken).toBe('admin-token-from-a-file-0123');
    expect(config.redis).toMatchObject({ url: 'redis://redis:6379/0', password: 'redis-pass' });
    expect((config.adapters['xmpp-eu']?.config as unknown as Record<string, unknown>)['password']).toBe('xmpp-pass');
    expect((config.adapters['hs']?.config as unknown as Record<string, Record<string, unknown>>)['appservice']).toMatchObject({ asToken: 'as-token-0123456789abcdef' });
    expect((config.adapters['bot']?.config as unknown as Record<string, Record<string, unknown>>)['bot']).toMatchObject({ password: 'bot-password' });

    const secretFile = await file('both', 'file-secret-value');
    const problems = (() => {
      try {
        resolveConfig(
          { adapters: ADAPTERS },
          {
            SYNCGATE_ADMIN_TOKEN: 'an-admin-token-0123456789',
            SYNCGATE_ADMIN_TOKEN_FILE: secretFile,
            SYNCGATE_XMPP_PASSWORD_FILE: join(dir, 'missing'),
            SYNCGATE_ADAPTER_NOPE_PASSWORD: 'x',
            SYNCGATE_LOG_LEVEL_FILE: secretFile,
          },
        );
      } catch (err) {
        return isSyncgateError(err) ? (err.details?.['problems'] as string[]) : [];
      }
      return [];
    })();
    expect(problems).toContain('environment variables SYNCGATE_ADMIN_TOKEN and SYNCGATE_ADMIN_TOKEN_FILE are both set: use one');
    expect(problems.join('\n')).toMatch(/SYNCGATE_XMPP_PASSWORD_FILE: cannot read .*missing \(ENOENT\)/);
    expect(problems.join('\n')).toMatch(/SYNCGATE_ADAPTER_NOPE_PASSWORD is not a known setting/);
    // only secrets have a _FILE variant
    expect(problems.join('\n')).toMatch(/SYNCGATE_LOG_LEVEL_FILE is not a known setting/);
    expect(problems.join('\n')).not.toContain('file-secret-value');
  });

  it('README documents every environment variable', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## The event log'));
    for (const name of [...Object.keys(ENV_OVERRIDES), 'SYNCGATE_CONFIG', 'SYNCGATE_ADAPTER_<NAME>_<SECRET>', '_FILE']) expect(table).toContain(name);
  });
});
