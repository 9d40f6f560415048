/**
 * Logic-less templates (mustache) for chat text and topics. No code runs:
 * views are decoded payloads (JSON data, never functions), partials are
 * refused, and names that would reach Object.prototype are refused at
 * compile time. HTML escaping is off — the output is plain chat text.
 *
 * A variable that does not resolve, or resolves to null, is a failure
 * (counted and logged by the caller), not an empty string: a reading
 * rendered as "temperature  °C" is worse than a counted decode failure. A
 * template handles a null field with a section (`{{#t}}…{{/t}}{{^t}}…{{/t}}`).
 */
import Mustache from 'mustache';

type Token = readonly unknown[];

export interface Template {
  readonly source: string;
  /** the variables the template reads at the top level (for topic → filter derivation and docs) */
  readonly variables: readonly string[];
  render(view: Readonly<Record<string, unknown>>): RenderResult;
}

export type RenderResult = { readonly ok: true; readonly text: string } | { readonly ok: false; readonly missing: readonly string[] };

// Our own writer: its parse cache holds only templates from configuration.
const writer = new Mustache.Writer();
const FORBIDDEN = new Set(Object.getOwnPropertyNames(Object.prototype));

/** Objects in a `{{name}}` become compact JSON rather than "[object Object]". */
function toText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
}

function checkTokens(tokens: readonly Token[], problems: string[]): void {
  for (const token of tokens) {
    const type = token[0];
    const name = token[1];
    if (type === '>') problems.push(`partials are not allowed ({{> ${String(name)}}})`);
    if ((type === 'name' || type === '&' || type === '#' || type === '^') && typeof name === 'string' && name !== '.') {
      for (const part of name.split('.')) {
        if (FORBIDDEN.has(part)) problems.push(`"${name}" names a built-in property`);
      }
    }
    const children = token[4];
    if ((type === '#' || type === '^') && Array.isArray(children)) checkTokens(children as Token[], problems);
  }
}

/** Compiles a template; throws an Error listing the problems when it is not usable. */
export function compileTemplate(source: string): Template {
  let tokens: Token[];
  try {
    tokens = writer.parse(source) as Token[];
  } catch (err) {
    throw new Error(`template does not parse: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  checkTokens(tokens, problems);
  if (problems.length > 0) throw new Error(problems.join('; '));
  const variables = tokens.filter((t) => t[0] === 'name' || t[0] === '&').map((t) => String(t[1]));

  const plain = plainParts(tokens);
  if (plain) {
    // Text and `{{name}}` only (most templates): rendered here, the same way mustache does, without its machinery per message.
    return {
      source,
      variables,
      render(view) {
        let text = '';
        let missing: string[] | undefined;
        for (const part of plain) {
          if (part.text !== undefined) {
            text += part.text;
            continue;
          }
          // lookup() over the one context, with the name split once at compile time.
          let value: unknown = view;
          let found = true;
          for (const key of part.path) {
            if (!hasOwn(value, key)) {
              found = false;
              break;
            }
            value = (value as Record<string, unknown>)[key];
          }
          if (!found || value === null || value === undefined) (missing ??= []).push(part.name);
          else text += toText(value);
        }
        return missing ? { ok: false, missing: [...new Set(missing)] } : { ok: true, text };
      },
    };
  }
  return {
    source,
    variables,
    render(view) {
      const missing: string[] = [];
      findMissing(tokens, [view], missing);
      if (missing.length > 0) return { ok: false, missing: [...new Set(missing)] };
      return { ok: true, text: writer.render(source, view, undefined, { escape: toText }) };
    },
  };
}

type PlainPart = { readonly text: string; readonly name?: undefined } | { readonly text?: undefined; readonly name: string; readonly path: readonly string[] };

/** The parts of a template made only of text and `{{name}}` tokens; undefined when it uses anything else. */
function plainParts(tokens: readonly Token[]): PlainPart[] | undefined {
  const parts: PlainPart[] = [];
  for (const token of tokens) {
    const [type, value] = token;
    if (type === 'text' && typeof value === 'string') parts.push({ text: value });
    else if (type === 'name' && typeof value === 'string' && value !== '.') parts.push({ name: value, path: value.split('.') });
    else return undefined;
  }
  return parts;
}

function hasOwn(value: unknown, key: string): boolean {
  return typeof value === 'object' && value !== null && Object.hasOwn(value, key);
}

/** Resolves a (dotted) name the way mustache does, innermost context first; `found` false when no context has it. */
function lookup(name: string, stack: readonly unknown[]): { found: boolean; value: unknown } {
  if (name === '.') return { found: true, value: stack[0] };
  const parts = name.split('.');
  search: for (const context of stack) {
    let value: unknown = context;
    for (const part of parts) {
      if (!hasOwn(value, part)) continue search;
      value = (value as Record<string, unknown>)[part];
    }
    return { found: true, value };
  }
  return { found: false, value: undefined };
}

/**
 * Walks the tokens with mustache's context rules: a section over a list
 * checks its body once per item; a falsy section is not rendered, so its
 * body cannot be missing anything. A section name that does not resolve is
 * simply false (that is what sections are for).
 */
function findMissing(tokens: readonly Token[], stack: readonly unknown[], missing: string[]): void {
  for (const token of tokens) {
    const type = token[0];
    const name = String(token[1]);
    if (type === 'name' || type === '&') {
      const { found, value } = lookup(name, stack);
      if (!found || value === null || value === undefined) missing.push(name);
    } else if (type === '#' || type === '^') {
      const { value } = lookup(name, stack);
      const children = (token[4] ?? []) as Token[];
      const truthy = Array.isArray(value) ? value.length > 0 : Boolean(value);
      if (type === '^') {
        if (!truthy) findMissing(children, stack, missing);
      } else if (Array.isArray(value)) {
        for (const item of value) findMissing(children, [item, ...stack], missing);
      } else if (truthy) {
        findMissing(children, typeof value === 'object' ? [value, ...stack] : stack, missing);
      }
    }
  }
}
