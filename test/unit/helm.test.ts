// Static checks of the Helm chart and the Dockerfile. No helm binary or Docker engine is
// available where the tests run, so these stand in for `helm lint` and a render.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { parse } from 'yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema, ENV_OVERRIDES, resolveConfig } from '../../src/config/index.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const chartDir = join(repoRoot, 'helm', 'syncgate');
const templatesDir = join(chartDir, 'templates');

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

function loadValues(): { [key: string]: Json } {
  const values = parse(readText(join(chartDir, 'values.yaml'))) as Json;
  if (!isObject(values)) throw new Error('values.yaml is not a mapping');
  return values;
}

/** Every template file, helpers, NOTES and the `helm test` pods in tests/ included: all of them can reference .Values. */
function loadTemplates(): Map<string, string> {
  const files = readdirSync(templatesDir, { recursive: true, encoding: 'utf8' }).filter((name) => /\.(ya?ml|tpl|txt)$/.test(name));
  return new Map(files.map((name) => [name.split('\\').join('/'), readText(join(templatesDir, name))]));
}

/** `.Values.a.b` and `$.Values.a.b` paths, as `a.b`. */
function valuesReferences(template: string): string[] {
  return [...template.matchAll(/\.Values((?:\.[A-Za-z0-9_]+)+)/g)].map((match) => (match[1] ?? '').slice(1));
}

function hasPath(root: Json, path: string): boolean {
  let node: Json | undefined = root;
  for (const key of path.split('.')) {
    if (!isObject(node) || !Object.hasOwn(node, key)) return false;
    node = node[key];
  }
  return true;
}

/** Paths of leaves; arrays and empty maps are leaves since templates consume them whole. */
function leafPaths(node: Json, prefix = ''): string[] {
  if (!isObject(node) || Object.keys(node).length === 0) return [prefix];
  return Object.entries(node).flatMap(([key, child]) => leafPaths(child, prefix ? `${prefix}.${key}` : key));
}

function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('\n');
}

describe('helm chart values', () => {
  let validate: ValidateFunction;

  beforeAll(() => {
    const schema = JSON.parse(readText(join(chartDir, 'values.schema.json'))) as { $schema?: string };
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    // strict: a misspelt schema keyword must fail here rather than be ignored by helm.
    const ajv = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true });
    validate = ajv.compile(schema);
  });

  it('values.yaml satisfies values.schema.json', () => {
    const ok = validate(loadValues());
    expect(describeErrors(validate.errors)).toBe('');
    expect(ok).toBe(true);
  });

  const invalid: Array<[string, (values: { [key: string]: Json }) => void, string]> = [
    ['a typo at the top level', (v) => { v['replicaCout'] = 3; }, ''],
    ['replicaCount as a string', (v) => { v['replicaCount'] = '2'; }, '/replicaCount'],
    ['a negative replicaCount', (v) => { v['replicaCount'] = -1; }, '/replicaCount'],
    ['a typo in a nested key', (v) => { setPath(v, 'service.prots', { http: 80 }); }, '/service'],
    ['an unknown service type', (v) => { setPath(v, 'service.type', 'Ingress'); }, '/service/type'],
    ['a port out of range', (v) => { setPath(v, 'containerPorts.http', 70000); }, '/containerPorts/http'],
    ['an unknown pull policy', (v) => { setPath(v, 'image.pullPolicy', 'Sometimes'); }, '/image/pullPolicy'],
    ['a typo in a probe', (v) => { setPath(v, 'livenessProbe.periodSecond', 5); }, '/livenessProbe'],
    [
      'a misspelt security field that the API server would drop',
      (v) => { setPath(v, 'containerSecurityContext.readOnlyRootFileSystem', true); },
      '/containerSecurityContext',
    ],
    ['a secret typo', (v) => { setPath(v, 'secrets.adminTokn', 'x'); }, '/secrets'],
    ['a viewer token shorter than the gateway accepts', (v) => { setPath(v, 'secrets.viewerTokens', ['short']); }, '/secrets/viewerTokens/0'],
    ['a comma inside one viewer token', (v) => { setPath(v, 'secrets.viewerTokens', ['viewer-one-0123456789,viewer-two-0123456789']); }, '/secrets/viewerTokens/0'],
    ['http.console as a string', (v) => { setPath(v, 'http.console', 'false'); }, '/http/console'],
    ['a typo in the http settings', (v) => { setPath(v, 'http.consle', false); }, '/http'],
    ['a Redis URL without scheme', (v) => { setPath(v, 'secrets.redisUrl', 'redis-master:6379'); }, '/secrets/redisUrl'],
    ['a cluster seed without a port', (v) => { setPath(v, 'redis.clusterNodes', ['redis-cluster-0']); }, '/redis/clusterNodes/0'],
    ['a comma inside one cluster seed', (v) => { setPath(v, 'redis.clusterNodes', ['a:6379,b:6379']); }, '/redis/clusterNodes/0'],
    ['a typo in the sentinel settings', (v) => { setPath(v, 'redis.sentinel.master', 'mymaster'); }, '/redis/sentinel'],
    ['a PDB bound that is neither a number nor a percentage', (v) => { setPath(v, 'pdb.minAvailable', 'half'); }, '/pdb/minAvailable'],
    ['a non-string pod annotation', (v) => { setPath(v, 'podAnnotations', { 'example.org/n': 1 }); }, '/podAnnotations/example.org~1n'],
    ['a typo in the ServiceMonitor', (v) => { setPath(v, 'metrics.serviceMonitor.enable', true); }, '/metrics/serviceMonitor'],
    ['a malformed scrape interval', (v) => { setPath(v, 'metrics.serviceMonitor.interval', '30 seconds'); }, '/metrics/serviceMonitor/interval'],
  ];

  it.each(invalid)('rejects %s', (_name, mutate, instancePath) => {
    const values = loadValues();
    mutate(values);
    expect(validate(values)).toBe(false);
    expect((validate.errors ?? []).map((e) => e.instancePath)).toContain(instancePath);
  });

  it('accepts the gateway config as free-form, since the gateway validates it itself', () => {
    const values = loadValues();
    values['config'] = { rooms: [{ id: 'ops', links: [{ endpoint: 'xmpp', target: 'ops@conference.example.org' }] }] };
    expect(validate(values)).toBe(true);
  });
});

function setPath(root: { [key: string]: Json }, path: string, value: Json): void {
  const keys = path.split('.');
  const last = keys.pop();
  if (last === undefined) throw new Error('empty path');
  let node: { [key: string]: Json } = root;
  for (const key of keys) {
    const child = node[key];
    if (!isObject(child)) throw new Error(`${path}: ${key} is not a mapping in values.yaml`);
    node = child;
  }
  node[last] = value;
}

describe('helm chart templates', () => {
  const templates = loadTemplates();

  it('has the templates the design names', () => {
    expect([...templates.keys()].sort()).toEqual(
      expect.arrayContaining([
        '_helpers.tpl',
        'NOTES.txt',
        'configmap.yaml',
        'deployment.yaml',
        'hpa.yaml',
        'pdb.yaml',
        'secret.yaml',
        'service.yaml',
        'serviceaccount.yaml',
        'servicemonitor.yaml',
        'ingress.yaml',
        'networkpolicy.yaml',
        'tests/test-readyz.yaml',
      ]),
    );
  });

  it('has a `helm test` pod that calls /readyz through the Service', () => {
    const test = templates.get('tests/test-readyz.yaml') ?? '';
    expect(test).toMatch(/helm\.sh\/hook: test/);
    expect(test).toMatch(/:\{\{ \.Values\.service\.ports\.http \}\}\/readyz/);
  });

  it('exposes the Matrix appservice listener on the pod, the Service and the Ingress when enabled', () => {
    expect(templates.get('deployment.yaml') ?? '').toMatch(/if \.Values\.matrixAppservice\.enabled \}\}\s+- name: appservice\s+containerPort: \{\{ \.Values\.containerPorts\.appservice \}\}/);
    expect(templates.get('service.yaml') ?? '').toMatch(/- name: appservice\s+port: \{\{ \.Values\.service\.ports\.appservice \}\}\s+targetPort: appservice/);
    expect(templates.get('ingress.yaml') ?? '').toMatch(/path: \{\{ \.Values\.ingress\.appservicePath \}\}[\s\S]+?name: appservice/);
    expect(templates.get('networkpolicy.yaml') ?? '').toMatch(/kind: NetworkPolicy/);
  });

  it('references only .Values paths that values.yaml defines', () => {
    const values = loadValues();
    const missing: string[] = [];
    let count = 0;
    for (const [file, text] of templates) {
      for (const path of valuesReferences(text)) {
        count += 1;
        if (!hasPath(values, path)) missing.push(`${file}: .Values.${path}`);
      }
    }
    expect(missing).toEqual([]);
    // Guards the regex itself: a chart this size references well over a hundred values.
    expect(count).toBeGreaterThan(100);
  });

  it('uses every value that values.yaml defines', () => {
    const references = [...templates.values()].flatMap(valuesReferences);
    const unused = leafPaths(loadValues()).filter(
      (leaf) => !references.some((ref) => leaf === ref || leaf.startsWith(`${ref}.`)),
    );
    expect(unused).toEqual([]);
  });

  it.each([...templates.keys()])('%s has balanced, unnested {{ }} actions', (file) => {
    const text = templates.get(file) ?? '';
    const tokens = [...text.matchAll(/\{\{|\}\}/g)].map((m) => m[0]);
    expect(tokens.length).toBeGreaterThan(0);
    let open = false;
    for (const token of tokens) {
      // Go templates do not nest actions: every {{ closes before the next one opens.
      expect(open ? token === '}}' : token === '{{').toBe(true);
      open = !open;
    }
    expect(open).toBe(false);
  });

  it.each([...templates.keys()])('%s closes every if/range/with/define with end', (file) => {
    const actions = [...(templates.get(file) ?? '').matchAll(/\{\{-?\s*(\/\*|[a-z]+)/g)].map((m) => m[1]);
    const opened = actions.filter((word) => word === 'if' || word === 'range' || word === 'with' || word === 'define' || word === 'block').length;
    const closed = actions.filter((word) => word === 'end').length;
    expect(closed).toBe(opened);
  });

  it('includes only helpers that _helpers.tpl defines', () => {
    const helpers = templates.get('_helpers.tpl') ?? '';
    const defined = new Set([...helpers.matchAll(/\{\{-?\s*define\s+"([^"]+)"/g)].map((m) => m[1]));
    expect(defined.size).toBeGreaterThan(5);
    const used = [...templates.values()].flatMap((text) => [...text.matchAll(/include\s+"([^"]+)"/g)].map((m) => m[1]));
    expect(used.filter((name) => name === undefined || !defined.has(name))).toEqual([]);
  });

  it('turns off the service-link variables Kubernetes would inject (SYNCGATE_PORT=tcp://… for the Service syncgate)', () => {
    expect(templates.get('deployment.yaml') ?? '').toMatch(/^\s+enableServiceLinks: false$/m);
  });

  it('probes the endpoints the gateway serves', () => {
    const deployment = templates.get('deployment.yaml') ?? '';
    expect(deployment).toMatch(/livenessProbe:\s+httpGet:\s+path: \/healthz/);
    expect(deployment).toMatch(/readinessProbe:\s+httpGet:\s+path: \/readyz/);
    expect(templates.get('servicemonitor.yaml') ?? '').toMatch(/path: \/metrics/);
  });
});

/**
 * Every `fail` and `required` guard of the templates, with what it checks written as a
 * predicate over the values (no helm binary here to render them). A guard added to a
 * template without a predicate here fails the first test, so the defaults are always
 * checked against all of them.
 */
const GUARDS: Record<string, (v: { [key: string]: Json }) => boolean> = {
  'syncgate: several replicas need one shared Redis.': (v) => {
    const replicas = get(v, 'autoscaling.enabled') === true ? Number(get(v, 'autoscaling.maxReplicas')) : Number(get(v, 'replicaCount'));
    const some = (path: string) => {
      const value = get(v, path);
      return Array.isArray(value) ? value.length > 0 : Boolean(value);
    };
    return replicas <= 1 || ['existingSecret', 'secrets.redisUrl', 'redis.clusterNodes', 'config.redis.cluster.nodes', 'redis.sentinel.nodes', 'config.redis.sentinel.nodes'].some(some);
  },
  'syncgate: set one Redis only': (v) => {
    const list = (path: string) => (Array.isArray(get(v, path)) ? (get(v, path) as Json[]) : []);
    return [Boolean(get(v, 'secrets.redisUrl')), list('redis.clusterNodes').length > 0, list('redis.sentinel.nodes').length > 0].filter(Boolean).length <= 1;
  },
  'syncgate: redis.sentinel.nodes needs redis.sentinel.name': (v) => {
    const nodes = get(v, 'redis.sentinel.nodes');
    return !(Array.isArray(nodes) && nodes.length > 0) || Boolean(get(v, 'redis.sentinel.name'));
  },
  'syncgate: autoscaling.minReplicas must not exceed autoscaling.maxReplicas.': (v) =>
    get(v, 'autoscaling.enabled') !== true || Number(get(v, 'autoscaling.minReplicas')) <= Number(get(v, 'autoscaling.maxReplicas')),
  'syncgate: autoscaling needs autoscaling.targetCPU or autoscaling.targetMemory.': (v) =>
    get(v, 'autoscaling.enabled') !== true || Boolean(get(v, 'autoscaling.targetCPU')) || Boolean(get(v, 'autoscaling.targetMemory')),
};

function get(root: Json, path: string): Json | undefined {
  let node: Json | undefined = root;
  for (const key of path.split('.')) node = isObject(node) ? node[key] : undefined;
  return node;
}

describe('helm chart guards (fail / required) against the default values', () => {
  const templates = loadTemplates();
  const guardsInTemplates = [...templates.values()].flatMap((text) => [
    ...[...text.matchAll(/\bfail\s+"([^"]+)"/g)].map((m) => m[1] ?? ''),
    ...[...text.matchAll(/\brequired\s+"([^"]+)"/g)].map((m) => m[1] ?? ''),
  ]);

  it('knows every guard the templates contain', () => {
    expect(guardsInTemplates.length).toBeGreaterThan(0);
    const unknown = guardsInTemplates.filter((message) => !Object.keys(GUARDS).some((key) => message.startsWith(key)));
    expect(unknown).toEqual([]);
  });

  it.each(Object.keys(GUARDS))('the default values pass: %s', (key) => {
    expect(guardsInTemplates.some((message) => message.startsWith(key))).toBe(true);
    expect(GUARDS[key]?.(loadValues())).toBe(true);
  });

  it('the defaults start one replica, which the in-memory log allows', () => {
    const values = loadValues();
    expect(values['replicaCount']).toBe(1);
    expect(get(values, 'secrets.redisUrl')).toBe('');
    // and the guard still bites when someone scales up without Redis
    values['replicaCount'] = 2;
    expect(GUARDS['syncgate: several replicas need one shared Redis.']?.(values)).toBe(false);
    // a Redis Cluster named in the gateway config (config.redis.cluster.nodes) is a shared Redis too
    values['config'] = { redis: { cluster: { nodes: ['redis-cluster-0.redis-cluster:6379'] } } };
    expect(GUARDS['syncgate: several replicas need one shared Redis.']?.(values)).toBe(true);
    const helpers = loadTemplates().get('_helpers.tpl') ?? '';
    expect(helpers).toMatch(/\$cluster := or \.Values\.redis\.clusterNodes \(dig "redis" "cluster" "nodes" "" \$config\)/);
    // so are the chart's own redis.clusterNodes and redis.sentinel
    delete values['config'];
    setPath(values, 'redis.clusterNodes', ['redis-cluster-0.redis-cluster:6379']);
    expect(GUARDS['syncgate: several replicas need one shared Redis.']?.(values)).toBe(true);
    setPath(values, 'redis.clusterNodes', []);
    setPath(values, 'redis.sentinel.nodes', ['redis-sentinel-0.redis:26379']);
    expect(GUARDS['syncgate: several replicas need one shared Redis.']?.(values)).toBe(true);
    expect(helpers).toMatch(/\$sentinel := or \.Values\.redis\.sentinel\.nodes \(dig "redis" "sentinel" "nodes" "" \$config\)/);
  });

  it('refuses a Sentinel without its master name, and two Redis at once', () => {
    const values = loadValues();
    setPath(values, 'redis.sentinel.nodes', ['redis-sentinel-0.redis:26379']);
    expect(GUARDS['syncgate: redis.sentinel.nodes needs redis.sentinel.name']?.(values)).toBe(false);
    setPath(values, 'redis.sentinel.name', 'mymaster');
    expect(GUARDS['syncgate: redis.sentinel.nodes needs redis.sentinel.name']?.(values)).toBe(true);
    expect(GUARDS['syncgate: set one Redis only']?.(values)).toBe(true);
    setPath(values, 'secrets.redisUrl', 'redis://redis-master:6379/0');
    expect(GUARDS['syncgate: set one Redis only']?.(values)).toBe(false);
    const helpers = loadTemplates().get('_helpers.tpl') ?? '';
    expect(helpers).toMatch(/if gt \(len \(compact \(list \.Values\.secrets\.redisUrl \(join "," \.Values\.redis\.clusterNodes\) \(join "," \.Values\.redis\.sentinel\.nodes\)\)\)\) 1/);
    expect(helpers).toMatch(/if and \.Values\.redis\.sentinel\.nodes \(not \.Values\.redis\.sentinel\.name\)/);
  });

  it('passes the cluster seed list and the sentinels as the variables the gateway reads, comma separated', () => {
    const deployment = loadTemplates().get('deployment.yaml') ?? '';
    expect(deployment).toMatch(/with \.Values\.redis\.clusterNodes \}\}\s+- name: SYNCGATE_REDIS_CLUSTER_NODES\s+value: \{\{ join "," \. \| quote \}\}/);
    expect(deployment).toMatch(/with \.Values\.redis\.sentinel\.nodes \}\}\s+- name: SYNCGATE_REDIS_SENTINEL_NODES\s+value: \{\{ join "," \. \| quote \}\}/);
    expect(deployment).toMatch(/with \.Values\.redis\.sentinel\.name \}\}\s+- name: SYNCGATE_REDIS_SENTINEL_NAME/);
    const helpers = loadTemplates().get('_helpers.tpl') ?? '';
    expect(helpers).toMatch(/^SYNCGATE_REDIS_SENTINEL_PASSWORD: \{\{ \.Values\.secrets\.redisSentinelPassword \| quote \}\}$/m);
    for (const name of ['SYNCGATE_REDIS_CLUSTER_NODES', 'SYNCGATE_REDIS_SENTINEL_NODES', 'SYNCGATE_REDIS_SENTINEL_NAME', 'SYNCGATE_REDIS_SENTINEL_PASSWORD']) expect(Object.keys(ENV_OVERRIDES)).toContain(name);
  });
});

describe('helm chart: viewer tokens and the console', () => {
  it('passes secrets.viewerTokens through the Secret as SYNCGATE_VIEWER_TOKENS (comma separated) and http.console as SYNCGATE_HTTP_CONSOLE', () => {
    const helpers = loadTemplates().get('_helpers.tpl') ?? '';
    expect(helpers).toMatch(/^SYNCGATE_VIEWER_TOKENS: \{\{ join "," \.Values\.secrets\.viewerTokens \| quote \}\}$/m);
    // an empty list joins to "", which the Secret template leaves out
    expect(loadTemplates().get('secret.yaml') ?? '').toMatch(/\{\{- if \$value \}\}/);
    const deployment = loadTemplates().get('deployment.yaml') ?? '';
    expect(deployment).toMatch(/- name: SYNCGATE_HTTP_CONSOLE\s+value: \{\{ \.Values\.http\.console \| quote \}\}/);
    for (const name of ['SYNCGATE_VIEWER_TOKENS', 'SYNCGATE_HTTP_CONSOLE']) expect(Object.keys(ENV_OVERRIDES)).toContain(name);
  });

  it('defaults agree with the gateway: no viewer tokens, the console served; the tokens meet the gateway length rule', () => {
    const values = loadValues();
    const defaults = resolveConfig({});
    expect(get(values, 'secrets.viewerTokens')).toEqual(defaults.http.viewerTokens);
    expect(get(values, 'http.console')).toBe(defaults.http.console);
    const schema = JSON.parse(readText(join(chartDir, 'values.schema.json'))) as { properties: { secrets: { properties: { viewerTokens: { items: { minLength: number } } } } } };
    const tokenLength = ConfigSchema.properties.http.properties.viewerTokens.items.minLength;
    expect(schema.properties.secrets.properties.viewerTokens.items.minLength).toBe(tokenLength);
  });
});

describe('helm chart README', () => {
  it('documents every value in its values table', () => {
    const readme = readText(join(chartDir, 'README.md'));
    // a row for the value itself or for a mapping that holds it (resources, say)
    const documented = (path: string) => path.split('.').some((_, i, keys) => readme.includes(`| \`${keys.slice(0, i + 1).join('.')}\` |`));
    const missing = leafPaths(loadValues()).filter((path) => !documented(path));
    expect(missing).toEqual([]);
  });
});

describe('helm chart metadata and Dockerfile', () => {
  const pkg = JSON.parse(readText(join(repoRoot, 'package.json'))) as { name: string; version: string; bin: Record<string, string> };

  it('Chart.yaml is apiVersion v2 and its appVersion is the package version', () => {
    const chart = parse(readText(join(chartDir, 'Chart.yaml'))) as Record<string, unknown>;
    expect(chart['apiVersion']).toBe('v2');
    expect(chart['name']).toBe(pkg.name);
    expect(chart['appVersion']).toBe(pkg.version);
    expect(chart['version']).toMatch(/^\d+\.\d+\.\d+/);
    expect(chart['dependencies']).toBeUndefined();
  });

  it('the image: a supported LTS Node, the API on every interface, a HEALTHCHECK on /healthz, OCI labels, and a README to build and run it', () => {
    const dockerfile = readText(join(repoRoot, 'Dockerfile'));
    const node = Number(/^ARG NODE_VERSION=(\d+)$/m.exec(dockerfile)?.[1]);
    // Node 20 reached its end of life in April 2026; LTS lines are the even ones.
    expect(node).toBeGreaterThanOrEqual(24);
    expect(node % 2).toBe(0);
    expect(dockerfile).toMatch(/^FROM node:\$\{NODE_VERSION\}-\$\{DEBIAN\}-slim AS runtime$/m);
    expect(dockerfile).toMatch(/^ENV SYNCGATE_HTTP_HOST=0\.0\.0\.0$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n?.*\/healthz/m);
    for (const label of ['title', 'description', 'version', 'revision', 'created', 'licenses', 'base.name']) expect(dockerfile).toContain(`org.opencontainers.image.${label}=`);
    const readme = readText(join(repoRoot, 'README.md'));
    const section = readme.slice(readme.indexOf('### Container image'));
    expect(section).toMatch(/docker build /);
    expect(section).toMatch(/docker run /);
  });

  it('the image runs the package binary as non-root on the chart port', () => {
    const dockerfile = readText(join(repoRoot, 'Dockerfile'));
    const values = loadValues();
    const containerPorts = values['containerPorts'];
    const securityContext = values['containerSecurityContext'];
    if (!isObject(containerPorts) || !isObject(securityContext)) throw new Error('values.yaml lacks containerPorts or containerSecurityContext');

    expect(dockerfile).toContain(`ENTRYPOINT ["node", "${pkg.bin['syncgate'] ?? 'missing bin'}"]`);
    expect(dockerfile).toContain('CMD ["serve", "--config", "/etc/syncgate/config.yaml"]');
    expect(dockerfile).toContain(`EXPOSE ${String(containerPorts['http'])}`);
    expect(dockerfile).toMatch(/RUN npm ci\b/);
    expect(dockerfile).toMatch(/npm prune --omit=dev/);
    const user = /^USER (\d+)(?::\d+)?$/m.exec(dockerfile);
    expect(user?.[1]).toBe(String(securityContext['runAsUser']));
    expect(user?.[1]).not.toBe('0');
    // The chart passes the same arguments as the image's CMD, so both start the same way.
    expect(readText(join(templatesDir, 'deployment.yaml'))).toMatch(/- serve\s+- --config\s+- \/etc\/syncgate\/config\.yaml/);
  });
});

describe('licences of what the image ships', () => {
  it('no GPL/AGPL package is a production dependency: the OMEMO library is opt-in (WITH_OMEMO) and only a dev dependency', () => {
    const lock = JSON.parse(readText(join(repoRoot, 'package-lock.json'))) as { packages: Record<string, { license?: string; dev?: boolean }> };
    const shipped = Object.entries(lock.packages).filter(([path, entry]) => path !== '' && entry.dev !== true);
    expect(shipped.length).toBeGreaterThan(50);
    const copyleft = shipped.filter(([, entry]) => /\b(A?GPL)/i.test(entry.license ?? '') && !/LGPL/i.test(entry.license ?? ''));
    expect(copyleft.map(([path, entry]) => `${path} (${entry.license ?? '?'})`)).toEqual([]);
    const signal = lock.packages['node_modules/@privacyresearch/libsignal-protocol-typescript'];
    expect(signal?.dev).toBe(true);
    expect(signal?.license).toMatch(/GPL/);
    const dockerfile = readText(join(repoRoot, 'Dockerfile'));
    expect(dockerfile).toMatch(/^ARG WITH_OMEMO=false$/m);
    expect(dockerfile).toMatch(/if \[ "\$WITH_OMEMO" = "true" \]; then[\s\\]*npm install --no-save --omit=dev/);
  });
});
