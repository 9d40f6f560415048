/**
 * Request validation with the shared TypeBox schemas (the same ones that type
 * the event), compiled by TypeBox rather than fastify's Ajv defaults: Ajv's
 * `removeAdditional` and body type coercion would silently accept requests our
 * schemas reject. Only query strings and path params are converted (they are
 * strings on the wire); bodies are checked exactly.
 */
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';

/** fastify's shape for validation errors (it is Ajv's); `message` is always set here. */
export type SchemaProblem = FastifySchemaValidationError & { message: string };

function problem(instancePath: string, message: string, schemaPath = ''): SchemaProblem {
  return { keyword: 'typebox', instancePath, schemaPath, params: {}, message };
}

const MAX_PROBLEMS = 20;

interface Variant {
  readonly kind: string;
  readonly check: TypeCheck<TSchema>;
}

/** Variants of a union whose members all carry a literal `kind`: checked one by one for precise messages. */
function kindVariants(schema: TSchema): Map<string, Variant> | undefined {
  const anyOf = (schema as { anyOf?: unknown }).anyOf;
  if (!Array.isArray(anyOf)) return undefined;
  const out = new Map<string, Variant>();
  for (const member of anyOf as TSchema[]) {
    const kind = (member as { properties?: { kind?: { const?: unknown } } }).properties?.kind?.const;
    if (typeof kind !== 'string') return undefined;
    out.set(kind, { kind, check: TypeCompiler.Compile(member) });
  }
  return out;
}

function problemsOf(check: TypeCheck<TSchema>, value: unknown): SchemaProblem[] {
  return [...check.Errors(value)].slice(0, MAX_PROBLEMS).map((e) => problem(e.path, e.message));
}

export function checker(schema: TSchema, convert: boolean): (data: unknown) => { value?: unknown; error?: SchemaProblem[] } {
  const check = TypeCompiler.Compile(schema);
  const variants = kindVariants(schema);
  return (data) => {
    let value = data;
    if (convert) {
      // Absent query strings arrive as null; defaults fill in what the client left out.
      value = Value.Convert(schema, Value.Default(schema, Value.Clone(data ?? {})));
    }
    if (check.Check(value)) return { value };
    if (variants) {
      const kind = typeof value === 'object' && value !== null ? (value as { kind?: unknown }).kind : undefined;
      const variant = typeof kind === 'string' ? variants.get(kind) : undefined;
      if (!variant) return { error: [problem('/kind', `must be one of ${[...variants.keys()].join(', ')}`)] };
      return { error: problemsOf(variant.check, value) };
    }
    return { error: problemsOf(check, value) };
  };
}

export const typeboxValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) =>
  checker(schema, httpPart === 'querystring' || httpPart === 'params');
