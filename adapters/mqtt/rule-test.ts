/**
 * A rule tried on a sample topic and payload, as the inbound path would run
 * it (filter match → decode → template → draft), without a broker and
 * without appending anything: what the console's Rules page and
 * POST /v1/admin/rules/test show.
 */
import type { RuleSample, RuleSampleResult } from '../../src/core/adapter.js';
import type { MqttAdapterConfig } from './config.js';
import { MqttConfigError } from './errors.js';
import { normalise } from './normalise.js';
import { compileRule } from './rules.js';


export function testRule(config: MqttAdapterConfig, via: string, sample: RuleSample): RuleSampleResult {
  let rule;
  try {
    rule = compileRule(sample.room ?? 'sample', { endpoint: via, target: sample.filter, ...(sample.options ? { options: { ...sample.options } } : {}) }, config);
  } catch (err) {
    if (err instanceof MqttConfigError) return { matched: false, error: `the rule is not valid: ${err.message}` };
    throw err;
  }
  const params = rule.filter.match(sample.topic);
  if (!params) return { matched: false, error: `the topic ${sample.topic} does not match the filter ${rule.filter.source}` };
  const result = normalise(
    { topic: sample.topic, payload: Buffer.from(sample.payload, 'utf8'), qos: 1, dup: false, retain: false },
    rule,
    params,
    { via, clientId: 'rule-test', now: Date.now(), maxPayloadBytes: config.maxPayloadBytes, dupWindowMs: 60_000, uniqueId: () => 'sample' },
  );
  if (result.ok === true) return { matched: true, message: result.value.draft };
  if (result.ok === 'skip') return { matched: true, error: result.detail };
  return { matched: true, error: `${result.reason}: ${result.detail}` };
}
