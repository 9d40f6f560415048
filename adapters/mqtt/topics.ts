/**
 * Topic filters with named wildcards: `sensors/+device/alert` subscribes as
 * `sensors/+/alert` and a matching topic yields `{device: '<segment>'}`;
 * `#rest` is a named multi-level wildcard (its value keeps the `/`).
 * Matching follows MQTT 5 §4.7: `#` also matches the parent level, and a
 * leading wildcard never matches a `$` topic.
 */
import { createHash } from 'node:crypto';

export interface NamedFilter {
  /** as configured, e.g. `sensors/+device/alert` */
  readonly source: string;
  /** what is subscribed, e.g. `sensors/+/alert` */
  readonly plain: string;
  /** wildcard names in order */
  readonly names: readonly string[];
  /** the named segments of a matching topic, or undefined when it does not match */
  match(topic: string): Readonly<Record<string, string>> | undefined;
}

type Level = { kind: 'literal'; text: string } | { kind: 'one'; name?: string } | { kind: 'many'; name?: string };

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Parses a named filter; throws an Error with the reason when it is not valid. */
export function parseNamedFilter(source: string): NamedFilter {
  if (source.length === 0) throw new Error('the topic filter is empty');
  if (Buffer.byteLength(source) > 65_535) throw new Error('the topic filter is longer than 65535 bytes');
  if (source.includes('\u0000')) throw new Error('the topic filter contains U+0000');
  if (source.startsWith('$share/') || source.startsWith('$queue/')) {
    // Shared subscriptions lose per-topic order and forbid No Local (MQTT 5 §4.8.2, [MQTT-3.8.3-4]).
    throw new Error('shared subscriptions are not supported in rules');
  }
  const raw = source.split('/');
  const levels: Level[] = [];
  const names: string[] = [];
  raw.forEach((text, i) => {
    const head = text[0];
    if (head === '+' || head === '#') {
      const name = text.slice(1);
      if (name !== '' && !NAME.test(name)) throw new Error(`wildcard name "${name}" in level ${i + 1} is not an identifier`);
      if (name !== '') {
        if (names.includes(name)) throw new Error(`wildcard name "${name}" is used twice`);
        names.push(name);
      }
      if (head === '#' && i !== raw.length - 1) throw new Error('a multi-level wildcard (#) must be the last level');
      levels.push(head === '+' ? { kind: 'one', ...(name ? { name } : {}) } : { kind: 'many', ...(name ? { name } : {}) });
    } else {
      if (text.includes('+') || text.includes('#')) throw new Error(`level ${i + 1} ("${text}") mixes a wildcard with text`);
      levels.push({ kind: 'literal', text });
    }
  });
  const plain = levels.map((l) => (l.kind === 'literal' ? l.text : l.kind === 'one' ? '+' : '#')).join('/');
  const leadingWildcard = levels[0]?.kind !== 'literal';

  return {
    source,
    plain,
    names,
    match(topic) {
      if (leadingWildcard && topic.startsWith('$')) return undefined;
      const parts = topic.split('/');
      const params: Record<string, string> = {};
      for (let i = 0; i < levels.length; i++) {
        const level = levels[i] as Level;
        if (level.kind === 'many') {
          if (level.name) params[level.name] = parts.slice(i).join('/');
          return params;
        }
        const part = parts[i];
        if (part === undefined) return undefined;
        if (level.kind === 'literal') {
          if (part !== level.text) return undefined;
        } else if (level.name) {
          params[level.name] = part;
        }
      }
      return parts.length === levels.length ? params : undefined;
    },
  };
}

/** True for a valid topic name to publish to (no wildcards, not empty, no U+0000). */
export function isPublishableTopic(topic: string): boolean {
  return topic.length > 0 && !/[+#]/.test(topic) && !topic.includes('\u0000') && Buffer.byteLength(topic) <= 65_535;
}

/**
 * A subscription identifier derived from the filter, so that a restarted
 * gateway recognises the identifiers on messages its persistent session
 * queued under the previous process (MQTT 5 §3.8.2.1.2: 1 … 268,435,455).
 */
export function subscriptionIdFor(plainFilter: string): number {
  const h = createHash('sha256').update(plainFilter).digest();
  return (h.readUInt32BE(0) % 268_435_455) + 1;
}
