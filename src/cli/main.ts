#!/usr/bin/env node
/**
 * The `syncgate` command. The only place that reads process.env and argv.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { registrationYaml } from '../../adapters/matrix/config.js';
import { prosodyConfigSnippet } from '../../adapters/xmpp/prosody-config.js';
import { ejabberdConfigSnippet } from '../../adapters/xmpp/ejabberd-config.js';
import { ignoredServiceLinks, loadConfig } from '../config/index.js';
import { SyncgateError, isSyncgateError } from '../core/errors.js';
import { createLogger } from '../log/index.js';
import { createGateway } from '../runtime/gateway.js';
import { runDlq } from '../runtime/dlq.js';

const USAGE = `syncgate — multi-protocol sync gateway

Usage:
  syncgate serve [--config FILE]   run the gateway (FILE also from SYNCGATE_CONFIG)
  syncgate dlq list [--group out:ADAPTER] [--limit N] [--json]
  syncgate dlq replay ID... | --all [--group out:ADAPTER]
  syncgate dlq drop ID... | --all [--group out:ADAPTER]
                                   inspect and replay the dead-letter streams (needs Redis)
  syncgate matrix-registration [--adapter NAME] [--out FILE]
                                   the application-service registration YAML for the homeserver
  syncgate prosody-config [--adapter NAME] [--server prosody|ejabberd]
                                   the Prosody (or ejabberd) settings the XMPP bridge account needs
  syncgate version                 print the version
  syncgate help                    this text

Without a Redis URL (redis.url or SYNCGATE_REDIS_URL) the gateway uses an
embedded in-memory log that does not survive a restart.`;

interface Parsed {
  command: string;
  args: string[];
  options: Map<string, string>;
}

const FLAGS = new Set(['all', 'json']);

function parseArgs(argv: readonly string[]): Parsed {
  const [command = 'help', ...rest] = argv;
  const options = new Map<string, string>();
  const args: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] ?? '';
    if (!arg.startsWith('--')) {
      args.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    if (eq > 0) options.set(arg.slice(2, eq), arg.slice(eq + 1));
    else if (FLAGS.has(arg.slice(2))) options.set(arg.slice(2), 'true');
    else {
      const value = rest[i + 1];
      if (value === undefined || value.startsWith('--')) throw new SyncgateError('SG_ERR_CLI_USAGE', `${arg} needs a value`);
      options.set(arg.slice(2), value);
      i++;
    }
  }
  return { command, args, options };
}

function onlyOptions(options: Map<string, string>, allowed: readonly string[]): void {
  for (const key of options.keys()) if (!allowed.includes(key)) throw new SyncgateError('SG_ERR_CLI_USAGE', `unknown option --${key}`);
}

async function configFrom(options: Map<string, string>) {
  const file = options.get('config') ?? process.env['SYNCGATE_CONFIG'];
  return loadConfig({ ...(file ? { file } : {}), env: process.env });
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function serve(options: Map<string, string>): Promise<void> {
  onlyOptions(options, ['config']);
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
}

async function dlq(args: readonly string[], options: Map<string, string>): Promise<number> {
  onlyOptions(options, ['config', 'group', 'limit', 'all', 'json']);
  const [action, ...ids] = args;
  if (action !== 'list' && action !== 'replay' && action !== 'drop') throw new SyncgateError('SG_ERR_CLI_USAGE', 'dlq needs list, replay or drop');
  const config = await configFrom(options);
  const logger = createLogger({ level: 'warn' });
  const result = await runDlq({ config, logger, action, ids, group: options.get('group'), limit: Number(options.get('limit') ?? 100), all: options.has('all') });
  if (options.has('json')) console.log(JSON.stringify(result.json, null, 2));
  else console.log(result.text);
  return 0;
}

async function matrixRegistration(options: Map<string, string>): Promise<number> {
  onlyOptions(options, ['config', 'adapter', 'out']);
  const config = await configFrom(options);
  const name = options.get('adapter') ?? 'matrix';
  const section = config.adapters[name];
  if (section?.type !== 'matrix') throw new SyncgateError('SG_ERR_CLI_USAGE', `no Matrix adapter named ${name} in the configuration (adapters.${name}.type: matrix)`);
  const text = registrationYaml(section.config);
  const out = options.get('out');
  if (out) {
    // The file holds both tokens: readable by its owner only.
    writeFileSync(out, text, { mode: 0o600 });
    console.log(`wrote ${out}; give it to the homeserver (e.g. Synapse app_service_config_files) and restart it`);
  } else {
    process.stdout.write(text);
  }
  return 0;
}

async function prosodyConfig(options: Map<string, string>): Promise<number> {
  onlyOptions(options, ['config', 'adapter', 'server']);
  const server = options.get('server') ?? 'prosody';
  if (server !== 'prosody' && server !== 'ejabberd') throw new SyncgateError('SG_ERR_CLI_USAGE', `--server must be prosody or ejabberd, not ${server}`);
  const config = await configFrom(options);
  const name = options.get('adapter') ?? 'xmpp';
  const section = config.adapters[name];
  if (section?.type !== 'xmpp') throw new SyncgateError('SG_ERR_CLI_USAGE', `no XMPP adapter named ${name} in the configuration (adapters.${name}.type: xmpp)`);
  // The MUC services the bridge joins need MUC MAM too.
  const mucDomains = [...new Set(config.rooms.flatMap((r) => r.links).filter((l) => l.endpoint === name && l.options?.['type'] !== 'chat').map((l) => l.target.split('@')[1] ?? '').filter(Boolean))];
  process.stdout.write((server === 'ejabberd' ? ejabberdConfigSnippet : prosodyConfigSnippet)(section.config, { mucDomains }));
  return 0;
}

async function main(argv: readonly string[]): Promise<number> {
  const { command, args, options } = parseArgs(argv);
  if (command !== 'dlq' && args.length > 0) throw new SyncgateError('SG_ERR_CLI_USAGE', `unexpected argument ${args[0]}`);
  switch (command) {
    case 'serve':
      await serve(options);
      return -1; // keeps running until a signal
    case 'dlq':
      return dlq(args, options);
    case 'matrix-registration':
      return matrixRegistration(options);
    case 'prosody-config':
      return prosodyConfig(options);
    case 'version':
    case '--version':
      console.log(version());
      return 0;
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      throw new SyncgateError('SG_ERR_CLI_USAGE', `unknown command ${command}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (isSyncgateError(err)) {
      console.error(`syncgate: ${err.code}: ${err.message}`);
      if (err.code === 'SG_ERR_CLI_USAGE') console.error(`\n${USAGE}`);
    } else {
      console.error('syncgate: unexpected error', err);
    }
    process.exitCode = isSyncgateError(err) && err.code === 'SG_ERR_CLI_USAGE' ? 2 : 1;
  },
);
