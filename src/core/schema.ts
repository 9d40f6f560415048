/**
 * Applying a TypeBox schema to untrusted input: defaults filled in, then
 * every violation listed (not just the first), as `/path: message`.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

export function applySchema<T extends TSchema>(schema: T, input: unknown): { value: Static<T>; problems: string[] } {
  const value: unknown = Value.Default(schema, structuredClone(input));
  const problems = [...Value.Errors(schema, value)].map((e) => `${e.path || '/'}: ${e.message}`);
  return { value: value as Static<T>, problems };
}
