/**
 * The JSON body parser: text a client sends is stored as sent, or refused.
 * Decoding would turn invalid UTF-8 into U+FFFD, and a JSON escape can make a
 * lone surrogate, which the Redis log (UTF-8) would store as U+FFFD: both are
 * refused with SG_ERR_TEXT_INVALID. Bodies are the only text a client sends
 * that is stored: path parameters that are not UTF-8 fail fastify's URL
 * decoding, and query values and headers are ids and tokens checked by pattern.
 */
import { isUtf8 } from 'node:buffer';
import type { FastifyRequest } from 'fastify';
import { SyncgateError } from '../core/errors.js';

/** fastify's default JSON parser in its callback form (empty bodies, `__proto__` keys). */
export type JsonTextParser = (request: FastifyRequest, body: string, done: (err: Error | null, value?: unknown) => void) => void;

/** Only a `\uD800`–`\uDFFF` escape can put a lone surrogate into JSON decoded from valid UTF-8. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

function isWellFormed(s: string): boolean {
  // ES2024 (Node 20); the TypeScript lib here is ES2023.
  return (s as string & { isWellFormed(): boolean }).isWellFormed();
}

/** Where the first string or key with a lone surrogate is, as a problem of `body…`; undefined when there is none. */
export function loneSurrogateProblem(value: unknown, path = 'body'): string | undefined {
  if (typeof value === 'string') return isWellFormed(value) ? undefined : `${path} has a lone surrogate`;
  if (typeof value !== 'object' || value === null) return undefined;
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const problem = loneSurrogateProblem(item, `${path}/${i}`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  }
  for (const [key, item] of Object.entries(value)) {
    // The key itself is not echoed: it is not valid text.
    if (!isWellFormed(key)) return `${path} has a key with a lone surrogate`;
    const problem = loneSurrogateProblem(item, `${path}/${key}`);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * Checks the bytes, then lets fastify's parser parse them. UTF-8 is
 * validated with SIMD and the escape test is a scan of the text; only a body
 * with a surrogate escape (also a valid escaped pair, as ASCII-only encoders
 * send emoji) is walked string by string.
 */
export function utf8JsonParser(parseJson: JsonTextParser): (request: FastifyRequest, body: Buffer, done: (err: Error | null, value?: unknown) => void) => void {
  return (request, body, done) => {
    if (!isUtf8(body)) {
      done(new SyncgateError('SG_ERR_TEXT_INVALID', 'the body is not valid UTF-8', { problems: ['body is not valid UTF-8'] }));
      return;
    }
    const text = body.toString('utf8');
    parseJson(request, text, (err, value) => {
      if (err) return done(err);
      // `includes` is a far faster scan than the regex, and most bodies have no escape at all.
      const problem = text.includes('\\u') && SURROGATE_ESCAPE.test(text) ? loneSurrogateProblem(value) : undefined;
      if (problem !== undefined) return done(new SyncgateError('SG_ERR_TEXT_INVALID', problem, { problems: [problem] }));
      done(null, value);
    });
  };
}
