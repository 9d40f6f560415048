/**
 * The one pino root logger; modules take child loggers with bound context.
 * Secrets are redacted by path wherever they appear in a logged object.
 */
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'token',
  '*.token',
  '*.*.token',
  'adminToken',
  '*.adminToken',
  'viewerTokens',
  '*.viewerTokens',
  'accessToken',
  '*.accessToken',
  '*.*.accessToken',
  'asToken',
  '*.asToken',
  '*.*.asToken',
  'hsToken',
  '*.hsToken',
  '*.*.hsToken',
  'secret',
  '*.secret',
  'storeSecret',
  '*.storeSecret',
  '*.*.storeSecret',
  'omemoSecret',
  '*.omemoSecret',
  '*.*.omemoSecret',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'url',
  '*.url',
];

export interface LoggerOptions {
  readonly level?: LevelWithSilent;
  readonly name?: string;
  readonly destination?: DestinationStream;
}

/** URLs may carry credentials (redis://:password@host): log them without. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const config = {
    name: options.name ?? 'syncgate',
    level: options.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: (value: unknown) => (typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? redactUrl(value) : '[redacted]') },
  };
  return options.destination ? pino(config, options.destination) : pino(config);
}

/** A logger that writes nothing: for tests and benchmarks. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
