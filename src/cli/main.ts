#!/usr/bin/env node
/**
 * The `syncgate` command. The only place that reads process.env and argv.
 *
 * Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ignoredServiceLinks, loadConfig, type Config } from '../config/index.js';
import type { AdapterCommand } from '../core/descriptor.js';
import { SyncgateError, isSyncgateError, type ErrorCode } from '../core/errors.js';
import { createLogger } from '../log/index.js';
import { createGateway } from '../runtime/gateway.js';
import { ADAPTERS, adapterDescriptor } from '../runtime/adapter-list.js';
import { roomLinkProblems } from '../runtime/adapters.js';
import { runDlq } from '../runtime/dlq.js';
import { createClient, gatewayUrl } from './client.js';

type Options = ParseArgsConfig['options'] & object;
type Values = Map<string, string>;

interface Command {
  readonly usage: string;
  readonly summary: string;
  /** option help lines, shown by `syncgate <command> --help` */
  readonly help: string;
  readonly options: Options;
  readonly run: (args: string[], options: Values, lists: ReadonlyMap<string, readonly string[]>) => Promise<number>;
}

const CONFIG_OPTION: Options = { config: { type: 'string' } };
const CONFIG_HELP = '  --config FILE    the configuration file (also SYNCGATE_CONFIG); SYNCGATE_* variables override it';
const CLIENT_OPTIONS: Options = { ...CONFIG_OPTION, url: { type: 'string' }, json: { type: 'boolean' } };
const CLIENT_HELP = `${CONFIG_HELP}
  --url URL        the running gateway (also SYNCGATE_URL; default: http.host/http.port of the configuration)
  --json           print the API answer as JSON`;
const ADMIN_NOTE = 'Uses the admin token of the configuration (http.adminToken / SYNCGATE_ADMIN_TOKEN).';

const EXIT_CODES = `Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.`;

const usage = (code: ErrorCode, text: string) => new SyncgateError(code, text);
const usageError = (text: string) => usage('SG_ERR_CLI_USAGE', text);

async function configFrom(options: Values): Promise<Config> {
  const file = options.get('config') ?? process.env['SYNCGATE_CONFIG'];
  return loadConfig({ ...(file ? { file } : {}), env: process.env });
}

function onlyOptions(options: Values, allowed: readonly string[]): void {
  for (const key of options.keys()) if (!allowed.includes(key)) throw usageError(`unknown option --${key}`);
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const print = (options: Values, json: unknown, text: string) => console.log(options.has('json') ? JSON.stringify(json, null, 2) : text);

// --- serve

async function serve(options: Values): Promise<number> {
  const config = await configFrom(options);
  const logger = createLogger({ level: config.log.level });
  const links = ignoredServiceLinks(process.env);
  if (links.length > 0) logger.debug({ variables: links }, 'ignoring Kubernetes service-link variables (not settings)');
  const gateway = await createGateway({ config, logger });

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error({ graceMs: config.shutdownGraceMs }, 'shutdown took too long: exiting');
      process.exit(1);
    }, config.shutdownGraceMs);
    force.unref();
    gateway.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await gateway.start();
  } catch (err) {
    // Release the log and the adapters so the process exits with the one-line error below.
    await gateway.stop().catch(() => undefined);
    throw err;
  }
  return -1; // keeps running until a signal
}

// --- check-config

async function checkConfig(options: Values): Promise<number> {
  const config = await configFrom(options);
  const problems = config.rooms.flatMap((room, i) => roomLinkProblems(config, room).map((p) => `/rooms/${i}${p}`));
  if (problems.length > 0) throw new SyncgateError('SG_ERR_CONFIG_INVALID', `${problems.length} problem(s):\n  - ${problems.join('\n  - ')}`, { problems });
  const links = ignoredServiceLinks(process.env);
  const adapters = Object.entries(config.adapters).map(([name, s]) => `${name} (${s.type})`);
  print(
    options,
    { ok: true, log: config.redis ? 'redis' : 'memory', adapters: Object.keys(config.adapters), rooms: config.rooms.map((r) => r.id), ignoredServiceLinks: links },
    [
      'configuration OK',
      `  log: ${config.redis ? 'Redis' : 'in-memory (not durable)'}`,
      `  adapters: ${adapters.length > 0 ? adapters.join(', ') : 'none'}`,
      `  rooms: ${config.rooms.length > 0 ? config.rooms.map((r) => r.id).join(', ') : 'none'}`,
      ...(links.length > 0 ? [`  ignored Kubernetes service-link variables: ${links.join(', ')}`] : []),
    ].join('\n'),
  );
  return 0;
}

// --- dlq

function progress(label: string): ((done: number, total: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  return (done, total) => {
    process.stderr.write(`\r${label} ${done}/${total}`);
    if (done === total) process.stderr.write('\n');
  };
}

async function dlq(args: string[], options: Values): Promise<number> {
  const [action, ...ids] = args;
  if (action !== 'list' && action !== 'replay' && action !== 'drop') throw usageError('dlq needs list, replay or drop');
  if (action === 'list' && ids.length > 0) throw usageError(`unexpected argument ${ids[0]}`);
  if (action !== 'list' && options.has('all') === ids.length > 0) throw usageError(`dlq ${action} needs dead-letter ids or --all (not both)`);
  const limit = Number(options.get('limit') ?? 100);
  if (!Number.isInteger(limit) || limit < 1) throw usageError('--limit must be a positive integer');
  const config = await configFrom(options);
  const group = options.get('group');
  const logger = createLogger({ level: 'warn' });
  const onProgress = progress(action === 'replay' ? 'replaying' : 'dropping');
  const result = await runDlq({ config, logger, action, ids, group, limit, all: options.has('all'), ...(onProgress ? { onProgress } : {}) });
  print(options, result.json, result.text);
  return 0;
}

// --- the commands adapters contribute (prosody-config, matrix-registration …)

function adapterCommand(c: AdapterCommand): Command {
  return {
    usage: c.usage,
    summary: c.summary,
    help: `${CONFIG_HELP}\n${c.help}`,
    options: { ...CONFIG_OPTION, ...c.options },
    run: (_a, options) => {
      onlyOptions(options, ['config', ...Object.keys(c.options)]);
      return c.run({
        options,
        config: () => configFrom(options),
        stdout: (text) => process.stdout.write(text),
        say: (line) => console.log(line),
        writePrivateFile: (path, text) => writeFileSync(path, text, { mode: 0o600 }),
        contributions: (config) =>
          Object.entries(config.adapters).flatMap(([adapter, section]) => {
            const text = adapterDescriptor(section.type)?.contributes?.[c.name]?.text(section.config, options);
            return text === undefined ? [] : [{ adapter, text }];
          }),
      });
    },
  };
}

const ADAPTER_COMMANDS: Record<string, Command> = Object.fromEntries(ADAPTERS.flatMap((d) => d.commands ?? []).map((c) => [c.name, adapterCommand(c)]));

// --- commands against a running gateway

async function adminClient(options: Values) {
  const config = await configFrom(options);
  const token = config.http.adminToken;
  if (token === undefined) throw usage('SG_ERR_CONFIG_INVALID', 'admin commands need the admin token: http.adminToken or SYNCGATE_ADMIN_TOKEN');
  return createClient(gatewayUrl(config, options.get('url') ?? process.env['SYNCGATE_URL']), token);
}

async function deviceClient(options: Values) {
  const config = await configFrom(options);
  const token = options.get('token') ?? process.env['SYNCGATE_TOKEN'];
  if (token === undefined || token === '') throw usageError('a device token is needed: --token or SYNCGATE_TOKEN (syncgate device add USER prints one)');
  return createClient(gatewayUrl(config, options.get('url') ?? process.env['SYNCGATE_URL']), token);
}

const enc = encodeURIComponent;

function argsExactly(args: string[], names: readonly string[], what: string): string[] {
  if (args.length !== names.length) throw usageError(`${what} needs ${names.join(' ')}`);
  return args;
}

interface StatusAnswer {
  log: { backend: string; durable: boolean; available: boolean; unavailablePartitions?: number[] };
  adapters: Record<
    string,
    { protocol?: string; state?: string; connected?: boolean; ready?: boolean; lastError?: { message: string; at: string }; rates?: { inPerSecond: number; outPerSecond: number }; detail?: Record<string, unknown> }
  >;
}

const perSecond = (n: number | undefined): string => (n === undefined ? '-' : n.toFixed(1));

/** The string leaves of a status detail named `fingerprint` (an end-to-end encryption device's identity), by dotted path. */
function fingerprints(detail: unknown, path: string): Array<[string, string]> {
  if (typeof detail !== 'object' || detail === null) return [];
  return Object.entries(detail).flatMap(([key, value]): Array<[string, string]> => {
    const at = path ? `${path}.${key}` : key;
    if (typeof value === 'string' && /^fingerprint$|Fingerprint$/.test(key)) return [[at, value]];
    return typeof value === 'object' ? fingerprints(value, at) : [];
  });
}

async function status(options: Values): Promise<number> {
  const api = await adminClient(options);
  const r = await api.call<StatusAnswer>('GET', '/v1/admin/status');
  const lines = [`log: ${r.log.backend}${r.log.durable ? '' : ' (not durable)'}, ${r.log.available ? 'available' : 'NOT available'}`];
  for (const [name, a] of Object.entries(r.adapters)) {
    lines.push(
      `${name} (${a.protocol ?? '?'}): ${a.state ?? '?'}, ${a.connected ? 'connected' : 'not connected'}, ${a.ready ? 'ready' : 'not ready'}${a.rates ? `, ${perSecond(a.rates.inPerSecond)} in/s, ${perSecond(a.rates.outPerSecond)} out/s (all replicas)` : ''}`,
    );
    if (a.lastError) lines.push(`  last error: ${a.lastError.message} (${a.lastError.at})`);
    for (const [path, value] of fingerprints(a.detail, '')) lines.push(`  ${path}: ${value}`);
  }
  print(options, r, lines.join('\n'));
  return 0;
}

async function user(args: string[], options: Values): Promise<number> {
  const [action, ...rest] = args;
  const api = await adminClient(options);
  switch (action) {
    case 'add': {
      const [id = ''] = argsExactly(rest, ['ID'], 'user add');
      const display = options.get('display');
      const u = await api.call<{ id: string }>('POST', '/v1/admin/users', { id, ...(display !== undefined ? { display } : {}) });
      print(options, u, `user ${u.id} created`);
      return 0;
    }
    case 'list': {
      argsExactly(rest, [], 'user list');
      const r = await api.call<{ users: Array<{ id: string; display?: string }> }>('GET', '/v1/admin/users');
      print(options, r, r.users.map((u) => `${u.id}${u.display !== undefined ? `\t${u.display}` : ''}`).join('\n') || 'no users');
      return 0;
    }
    case 'show': {
      const [id = ''] = argsExactly(rest, ['ID'], 'user show');
      const r = await api.call<{ user: { id: string }; devices: Array<{ deviceId: string }>; rooms: string[] }>('GET', `/v1/admin/users/${enc(id)}`);
      print(options, r, `${r.user.id}\n  devices: ${r.devices.map((d) => d.deviceId).join(', ') || 'none'}\n  rooms: ${r.rooms.join(', ') || 'none'}`);
      return 0;
    }
    case 'rm': {
      const [id = ''] = argsExactly(rest, ['ID'], 'user rm');
      await api.call('DELETE', `/v1/admin/users/${enc(id)}`);
      print(options, { deleted: id }, `user ${id} deleted`);
      return 0;
    }
    default:
      throw usageError('user needs add, list, show or rm');
  }
}

async function device(args: string[], options: Values): Promise<number> {
  const [action, ...rest] = args;
  const api = await adminClient(options);
  switch (action) {
    case 'add': {
      const [owner = ''] = argsExactly(rest, ['USER'], 'device add');
      const name = options.get('name');
      const d = await api.call<{ deviceId: string; token: string }>('POST', '/v1/admin/devices', { user: owner, ...(name !== undefined ? { name } : {}) });
      print(options, d, `device ${d.deviceId} of ${owner}\ntoken (shown once): ${d.token}`);
      return 0;
    }
    case 'list': {
      argsExactly(rest, [], 'device list');
      const owner = options.get('user');
      const r = await api.call<{ devices: Array<{ deviceId: string; user: string; name?: string }> }>('GET', `/v1/admin/devices${owner !== undefined ? `?user=${enc(owner)}` : ''}`);
      print(options, r, r.devices.map((d) => `${d.deviceId}\t${d.user}${d.name !== undefined ? `\t${d.name}` : ''}`).join('\n') || 'no devices');
      return 0;
    }
    case 'rm': {
      const [id = ''] = argsExactly(rest, ['ID'], 'device rm');
      await api.call('DELETE', `/v1/admin/devices/${enc(id)}`);
      print(options, { deleted: id }, `device ${id} deleted`);
      return 0;
    }
    default:
      throw usageError('device needs add, list or rm');
  }
}

function parseLink(text: string): { endpoint: string; target: string } {
  const i = text.indexOf('=');
  if (i <= 0 || i === text.length - 1) throw usageError(`--link takes ENDPOINT=TARGET, got ${text}`);
  return { endpoint: text.slice(0, i), target: text.slice(i + 1) };
}

async function room(args: string[], options: Values, links: readonly string[]): Promise<number> {
  const [action, ...rest] = args;
  const api = await adminClient(options);
  type Spec = { id: string; name?: string; links: Array<{ endpoint: string; target: string }> };
  const describe = (s: Spec) => `${s.id}${s.name !== undefined ? ` (${s.name})` : ''}${s.links.map((l) => `\n  ${l.endpoint} ${l.target}`).join('')}`;
  switch (action) {
    case 'put': {
      const [id = ''] = argsExactly(rest, ['ID'], 'room put');
      const name = options.get('name');
      const s = await api.call<Spec>('PUT', `/v1/admin/rooms/${enc(id)}`, { ...(name !== undefined ? { name } : {}), links: links.map(parseLink) });
      print(options, s, `room ${describe(s)}`);
      return 0;
    }
    case 'list': {
      argsExactly(rest, [], 'room list');
      const r = await api.call<{ rooms: Spec[] }>('GET', '/v1/admin/rooms');
      print(options, r, r.rooms.map(describe).join('\n') || 'no rooms');
      return 0;
    }
    case 'show': {
      const [id = ''] = argsExactly(rest, ['ID'], 'room show');
      const s = await api.call<Spec>('GET', `/v1/admin/rooms/${enc(id)}`);
      print(options, s, describe(s));
      return 0;
    }
    case 'rm': {
      const [id = ''] = argsExactly(rest, ['ID'], 'room rm');
      await api.call('DELETE', `/v1/admin/rooms/${enc(id)}`);
      print(options, { deleted: id }, `room ${id} deleted`);
      return 0;
    }
    default:
      throw usageError('room needs put, list, show or rm');
  }
}

async function grant(args: string[], options: Values, revoke: boolean): Promise<number> {
  const [who = '', where = ''] = argsExactly(args, ['USER', 'ROOM'], revoke ? 'revoke' : 'grant');
  const api = await adminClient(options);
  await api.call(revoke ? 'DELETE' : 'PUT', `/v1/admin/users/${enc(who)}/rooms/${enc(where)}`);
  print(options, { user: who, room: where, granted: !revoke }, revoke ? `${who} no longer has ${where}` : `${who} may use ${where}`);
  return 0;
}

async function send(args: string[], options: Values): Promise<number> {
  const [target = '', text = ''] = argsExactly(args, ['ROOM', 'TEXT'], 'send');
  const api = await deviceClient(options);
  const r = await api.call<{ eventId: string; cursor: string }>('PUT', `/v1/rooms/${enc(target)}/send/${enc(options.get('txn') ?? `cli-${randomUUID()}`)}`, {
    kind: 'message',
    content: { body: text },
  });
  print(options, r, r.eventId);
  return 0;
}

interface EventLine {
  room: string;
  eventId: string;
  kind: string;
  sender: { display?: string; uid?: string };
  content?: { body?: string };
  ts: { received?: number };
}

function humanLine(e: EventLine): string {
  const who = e.sender.display ?? e.sender.uid ?? '?';
  const time = e.ts.received !== undefined ? new Date(e.ts.received).toISOString() : '';
  return `${time} ${who}: ${e.kind === 'message' ? (e.content?.body ?? '') : `[${e.kind}]`}`;
}

async function tail(args: string[], options: Values): Promise<number> {
  const [target = ''] = argsExactly(args, ['ROOM'], 'tail');
  const api = await deviceClient(options);
  let since = options.get('since');
  const once = options.has('once');
  let stop = false;
  const onSignal = () => {
    stop = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // The room must exist and be granted: fail before following.
  await api.call('GET', `/v1/rooms/${enc(target)}/messages?limit=1`);
  while (!stop) {
    const q = new URLSearchParams({ timeout: once ? '0' : '25000', limit: '100', ...(since !== undefined ? { since } : {}) });
    const page = await api.call<{ events: EventLine[]; next: string }>('GET', `/v1/sync?${q.toString()}`);
    for (const e of page.events) {
      if (e.room !== target) continue;
      console.log(options.has('json') ? JSON.stringify(e) : humanLine(e));
    }
    since = page.next;
    if (once && page.events.length === 0) break;
  }
  return 0;
}

// --- what the console shows, from a shell

interface DeliveryLine {
  endpoint: string;
  target: string;
  state: string;
  nativeIds?: Record<string, string>;
  at?: number;
  attempt?: number;
  nextAt?: number;
  error?: string;
}

const iso = (ms: number | undefined) => (ms === undefined ? '' : new Date(ms).toISOString());

function deliveryLine(d: DeliveryLine): string {
  const ids = Object.entries(d.nativeIds ?? {}).map(([k, v]) => `${k}=${v}`).join(' ');
  const extra =
    d.state === 'delivered' ? [ids, iso(d.at)].filter(Boolean).join(' ') : d.state === 'retrying' ? `attempt ${d.attempt ?? '?'}, next ${iso(d.nextAt)}: ${d.error ?? ''}` : d.state === 'dead-lettered' ? (d.error ?? '') : '';
  return `${d.endpoint} ${d.target}: ${d.state}${extra ? ` ${extra}` : ''}`;
}

async function timeline(args: string[], options: Values): Promise<number> {
  const [target = ''] = argsExactly(args, ['ROOM'], 'timeline');
  const api = await adminClient(options);
  const q = new URLSearchParams({ limit: options.get('limit') ?? '20', ...(options.has('from') ? { from: options.get('from') ?? '' } : {}) });
  const page = await api.call<{ events: Array<{ event: EventLine; deliveries: DeliveryLine[] }>; next?: string }>('GET', `/v1/admin/rooms/${enc(target)}/timeline?${q.toString()}`);
  const text = page.events.map(({ event, deliveries }) => [`${event.eventId} ${humanLine(event)}`, ...deliveries.map((d) => `    ${deliveryLine(d)}`)].join('\n'));
  print(options, page, [...text, ...(page.next !== undefined ? [`(older: --from ${page.next})`] : [])].join('\n') || 'no events');
  return 0;
}

async function trace(args: string[], options: Values): Promise<number> {
  const [id = ''] = argsExactly(args, ['ID'], 'trace');
  const api = await adminClient(options);
  const room = options.get('room');
  const t = await api.call<{ room: string; eventId: string; idempotencyKey: string; origin: { proto: string; via: string; ids: Record<string, string> }; received: number; event: EventLine; deliveries: DeliveryLine[] }>(
    'GET',
    `/v1/admin/trace/${enc(id)}${room !== undefined ? `?room=${enc(room)}` : ''}`,
  );
  const lines = [
    `event ${t.eventId} in ${t.room}`,
    `  idempotency key ${t.idempotencyKey}`,
    `  from ${t.origin.proto} via ${t.origin.via}${Object.keys(t.origin.ids).length > 0 ? ` (${Object.entries(t.origin.ids).map(([k, v]) => `${k}=${v}`).join(' ')})` : ''} at ${iso(t.received)}`,
    `  ${humanLine(t.event)}`,
    ...t.deliveries.map((d) => `  → ${deliveryLine(d)}`),
  ];
  print(options, t, lines.join('\n'));
  return 0;
}

async function lag(args: string[], options: Values): Promise<number> {
  argsExactly(args, [], 'lag');
  const api = await adminClient(options);
  const r = await api.call<{
    adapters: Record<string, { events: number; seconds: number; retrying: number; deadLetters: number }>;
    links?: Array<{ room: string; endpoint: string; target: string; events: number; seconds: number; retrying: boolean; deadLetters: number; capped?: boolean; inPerSecond?: number; outPerSecond?: number }>;
  }>('GET', '/v1/admin/lag');
  const rows = Object.entries(r.adapters).map(([name, l]) => `${name}\t${l.events} events\t${l.seconds.toFixed(1)} s\t${l.retrying} retrying\t${l.deadLetters} dead letters`);
  const links = (r.links ?? []).map(
    (l) =>
      `  ${l.room} → ${l.endpoint} ${l.target}\t${perSecond(l.inPerSecond)} in/s\t${perSecond(l.outPerSecond)} out/s\t${l.capped === true ? '≥' : ''}${l.events} events\t${l.seconds.toFixed(1)} s${l.retrying ? '\tretrying' : ''}\t${l.deadLetters} dead letters`,
  );
  const text = [rows.join('\n') || 'no adapters', ...(links.length > 0 ? ['links:', ...links] : [])].join('\n');
  print(options, r, text);
  return 0;
}

async function audit(args: string[], options: Values): Promise<number> {
  argsExactly(args, [], 'audit');
  const api = await adminClient(options);
  const q = new URLSearchParams({ limit: options.get('limit') ?? '20', ...(options.has('before') ? { before: options.get('before') ?? '' } : {}) });
  const r = await api.call<{ entries: Array<{ at: number; by: string; action: string; ids: string[]; count: number; done: number }>; next?: string }>('GET', `/v1/admin/audit?${q.toString()}`);
  const names: Record<string, string> = { 'dead-letters.replay': 'replay', 'dead-letters.drop': 'discard' };
  const rows = r.entries.map((e) => `${new Date(e.at).toISOString()}\t${e.by}\t${names[e.action] ?? e.action}\t${e.done} of ${e.count}\t${e.ids.join(',')}${e.count > e.ids.length ? ` (+${e.count - e.ids.length})` : ''}`);
  print(options, r, [...rows, ...(r.next !== undefined ? [`(older: --before ${r.next})`] : [])].join('\n') || 'no replay or discard recorded');
  return 0;
}

async function ruleTest(args: string[], options: Values, optionList: readonly string[]): Promise<number> {
  const [filter = '', topic = '', payload = ''] = argsExactly(args, ['FILTER', 'TOPIC', 'PAYLOAD'], 'rule-test');
  const ruleOptions = Object.fromEntries(
    optionList.map((text) => {
      const i = text.indexOf('=');
      if (i <= 0) throw usageError(`--option takes NAME=VALUE, got ${text}`);
      return [text.slice(0, i), text.slice(i + 1)];
    }),
  );
  const api = await adminClient(options);
  const endpoint = options.get('adapter');
  const r = await api.call<{ matched: boolean; message?: { content?: { body?: string } }; error?: string }>('POST', '/v1/admin/rules/test', {
    filter,
    topic,
    payload,
    ...(optionList.length > 0 ? { options: ruleOptions } : {}),
    ...(endpoint !== undefined ? { endpoint } : {}),
  });
  const text = r.error !== undefined ? `${r.matched ? 'matched, nothing ingested' : 'no match'}: ${r.error}` : `would ingest: ${JSON.stringify(r.message)}`;
  print(options, r, text);
  return r.error !== undefined ? 1 : 0;
}

// --- the command table

const COMMANDS: Record<string, Command> = {
  serve: { usage: 'serve [--config FILE]', summary: 'run the gateway', help: CONFIG_HELP, options: CONFIG_OPTION, run: (_a, o) => serve(o) },
  'check-config': {
    usage: 'check-config [--config FILE] [--json]',
    summary: 'validate the configuration file, the SYNCGATE_* variables and the room links; starts nothing',
    help: `${CONFIG_HELP}\n  --json           print the outcome as JSON`,
    options: { ...CONFIG_OPTION, json: { type: 'boolean' } },
    run: (_a, o) => checkConfig(o),
  },
  dlq: {
    usage: 'dlq list [--group out:ADAPTER] [--limit N] [--json]\n  syncgate dlq replay ID... | --all [--group out:ADAPTER]\n  syncgate dlq drop ID... | --all [--group out:ADAPTER]',
    summary: 'inspect, replay or drop the dead-letter streams (needs Redis)',
    help: `${CONFIG_HELP}
  --group GROUP    only this consumer group (out:ADAPTER, an adapter of the configuration)
  --limit N        list at most N entries (default 100)
  --all            replay or drop every dead letter (of --group)
  --json           print the outcome as JSON
An unknown id is an error (exit 1); an empty queue with --all is "nothing to replay" (exit 0).`,
    options: { ...CONFIG_OPTION, group: { type: 'string' }, limit: { type: 'string' }, all: { type: 'boolean' }, json: { type: 'boolean' } },
    run: dlq,
  },
  ...ADAPTER_COMMANDS,
  status: {
    usage: 'status [--json]',
    summary: "this replica's view of the log and each adapter (state, connection, last error, and the fingerprints to verify: the XMPP bridge's OMEMO device)",
    help: `${CLIENT_HELP}\n${ADMIN_NOTE}`,
    options: CLIENT_OPTIONS,
    run: (_a, o) => status(o),
  },
  user: {
    usage: 'user add ID [--display NAME] | user list | user show ID | user rm ID',
    summary: 'manage users (admin API of the running gateway)',
    help: `${CLIENT_HELP}\n  --display NAME   the display name of a new user\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, display: { type: 'string' } },
    run: user,
  },
  device: {
    usage: 'device add USER [--name NAME] | device list [--user USER] | device rm ID',
    summary: "manage devices; `add` prints the device's token once",
    help: `${CLIENT_HELP}\n  --name NAME      the name of a new device\n  --user USER      list only this user's devices\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, name: { type: 'string' }, user: { type: 'string' } },
    run: device,
  },
  room: {
    usage: 'room put ID [--name NAME] [--link ENDPOINT=TARGET]... | room list | room show ID | room rm ID',
    summary: 'manage rooms and their links',
    help: `${CLIENT_HELP}\n  --name NAME      the room's name\n  --link E=T       a link to adapter E's target T (repeatable; put replaces all links)\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, name: { type: 'string' }, link: { type: 'string', multiple: true } },
    run: (a, o, l) => room(a, o, l.get('link') ?? []),
  },
  grant: { usage: 'grant USER ROOM', summary: 'grant a room to a user (all its devices)', help: `${CLIENT_HELP}\n${ADMIN_NOTE}`, options: CLIENT_OPTIONS, run: (a, o) => grant(a, o, false) },
  revoke: { usage: 'revoke USER ROOM', summary: 'revoke a room grant', help: `${CLIENT_HELP}\n${ADMIN_NOTE}`, options: CLIENT_OPTIONS, run: (a, o) => grant(a, o, true) },
  send: {
    usage: 'send ROOM TEXT [--token TOKEN] [--txn ID]',
    summary: 'send a text message to a room as a device',
    help: `${CLIENT_HELP}\n  --token TOKEN    a device token (also SYNCGATE_TOKEN)\n  --txn ID         the transaction id (a retry with the same id sends nothing new)`,
    options: { ...CLIENT_OPTIONS, token: { type: 'string' }, txn: { type: 'string' } },
    run: send,
  },
  timeline: {
    usage: 'timeline ROOM [--limit N] [--from CURSOR] [--json]',
    summary: "a room's newest events with each link's delivery state (delivered, pending, retrying, dead-lettered)",
    help: `${CLIENT_HELP}\n  --limit N        events per page (default 20)\n  --from CURSOR    older events: the cursor the previous page printed\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, limit: { type: 'string' }, from: { type: 'string' } },
    run: timeline,
  },
  trace: {
    usage: 'trace ID [--room ROOM] [--json]',
    summary: 'one event end to end: by event id, idempotency key or native id, with every delivery',
    help: `${CLIENT_HELP}\n  --room ROOM      look only in this room\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, room: { type: 'string' } },
    run: trace,
  },
  audit: {
    usage: 'audit [--limit N] [--before ID] [--json]',
    summary: 'who replayed or discarded which dead letters, and when (newest first)',
    help: `${CLIENT_HELP}\n  --limit N        entries per page (default 20)\n  --before ID      older entries: the id the previous page printed\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, limit: { type: 'string' }, before: { type: 'string' } },
    run: audit,
  },
  lag: { usage: 'lag [--json]', summary: 'delivery lag per adapter and per link, in events and seconds, and each link\'s events in and out per second (all replicas)', help: `${CLIENT_HELP}\n${ADMIN_NOTE}`, options: CLIENT_OPTIONS, run: lag },
  'rule-test': {
    usage: "rule-test FILTER TOPIC PAYLOAD [--option NAME=VALUE]... [--adapter NAME] [--json]",
    summary: 'run an MQTT rule on a sample message: what it would ingest, or why not (exit 1)',
    help: `${CLIENT_HELP}\n  --option N=V     a rule option, e.g. decode=json, template='{{device}}: {{level}}' (repeatable)\n  --adapter NAME   the MQTT adapter whose settings apply (default: the first)\n${ADMIN_NOTE}`,
    options: { ...CLIENT_OPTIONS, option: { type: 'string', multiple: true }, adapter: { type: 'string' } },
    run: (a, o, l) => ruleTest(a, o, l.get('option') ?? []),
  },
  tail: {
    usage: 'tail ROOM [--since CURSOR] [--json] [--token TOKEN] [--once]',
    summary: 'follow a room from the log: its events as they arrive (Ctrl-C stops)',
    help: `${CLIENT_HELP}\n  --token TOKEN    a device token granted the room (also SYNCGATE_TOKEN)\n  --since CURSOR   start after this sync cursor (default: from the start of the log)\n  --once           print what is there and exit instead of following`,
    options: { ...CLIENT_OPTIONS, token: { type: 'string' }, since: { type: 'string' }, once: { type: 'boolean' } },
    run: tail,
  },
};

function usageText(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return `syncgate — multi-protocol sync gateway

Usage: syncgate <command> [options]    (syncgate <command> --help for its options)

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  .join('\n')}
  ${'version'.padEnd(width)}  print the version
  ${'help'.padEnd(width)}  this text

Without a Redis URL (redis.url or SYNCGATE_REDIS_URL) the gateway uses an
embedded in-memory log that does not survive a restart.
${EXIT_CODES}`;
}

function commandHelp(c: Command): string {
  return `Usage: syncgate ${c.usage}\n\n${c.summary}\n\nOptions:\n${c.help}\n  -h, --help       this text\n\n${EXIT_CODES}`;
}

/** the command being run, for the usage line after a usage error */
let current: Command | undefined;

async function main(argv: readonly string[]): Promise<number> {
  const [name = 'help', ...rest] = argv;
  if (name === 'version' || name === '--version') {
    console.log(version());
    return 0;
  }
  if (name === 'help' || name === '--help' || name === '-h') {
    const about = rest[0] !== undefined ? COMMANDS[rest[0]] : undefined;
    console.log(about && rest[0] ? commandHelp(about) : usageText());
    return 0;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!command) throw usageError(`unknown command ${name}`);
  current = command;
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...rest], options: { ...command.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const m = /'(-{1,2}[^' ]+)/.exec(err instanceof Error ? err.message : '');
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw usageError(`unknown option ${m?.[1] ?? ''} for ${name} (syncgate ${name} --help)`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw usageError(`${m?.[1] ?? 'an option'} needs a value`);
    throw usageError(err instanceof Error ? err.message : String(err));
  }
  if (parsed.values['help'] === true) {
    console.log(commandHelp(command));
    return 0;
  }
  const options: Values = new Map();
  const lists = new Map<string, string[]>();
  for (const [key, value] of Object.entries(parsed.values)) {
    if (key === 'help') continue;
    if (Array.isArray(value)) lists.set(key, value.map(String));
    else options.set(key, value === true ? 'true' : String(value));
  }
  const takesArgs = ['dlq', 'user', 'device', 'room', 'grant', 'revoke', 'send', 'tail', 'timeline', 'trace', 'lag', 'rule-test', 'audit'].includes(name);
  if (!takesArgs && parsed.positionals.length > 0) throw usageError(`unexpected argument ${parsed.positionals[0]}`);
  return command.run(parsed.positionals, options, lists);
}

/** usage and configuration errors exit 2, everything else 1 */
const USAGE_CODES: readonly string[] = ['SG_ERR_CLI_USAGE', 'SG_ERR_CONFIG_INVALID', 'SG_ERR_CONFIG_FILE'];

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (isSyncgateError(err)) {
      console.error(`syncgate: ${err.code}: ${err.message}`);
      if (err.code === 'SG_ERR_CLI_USAGE') console.error(current ? `\nUsage: syncgate ${current.usage}\n(syncgate ${current.usage.split(' ')[0]} --help for its options)` : `\n${usageText()}`);
    } else {
      console.error('syncgate: unexpected error', err);
    }
    process.exitCode = isSyncgateError(err) && USAGE_CODES.includes(err.code) ? 2 : 1;
  },
);
