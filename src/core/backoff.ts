/** The jittered delay before reconnect attempt `attempt` (0-based): full jitter over an exponential cap (min·2^attempt, at most maxMs). Pure. */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 20));
  return Math.round(minMs + random() * Math.max(0, cap - minMs));
}
