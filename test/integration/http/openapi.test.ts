/**
 * The OpenAPI document (/docs/json) as a client generator reads it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_TABLE } from '../../../src/core/errors.js';
import { startApp, type TestApp } from './helpers.js';

type Op = { operationId?: string; responses?: Record<string, { content?: Record<string, { schema?: { $ref?: string }; example?: unknown }>; headers?: Record<string, unknown> }>; requestBody?: { content?: Record<string, { example?: unknown }> } };
type Doc = { paths: Record<string, Record<string, Op>>; components: { schemas: Record<string, { allOf?: Array<{ $ref?: string; properties?: { code?: { enum?: string[] } } }> }> } };

let t: TestApp;
let doc: Doc;
beforeAll(async () => {
  t = await startApp();
  const r = await t.client.request('GET', '/docs/json');
  expect(r.status).toBe(200);
  doc = r.body as unknown as Doc;
});
afterAll(async () => t.close());

const operations = () => Object.entries(doc.paths).flatMap(([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method, op })));

describe('OpenAPI document', () => {
  it('gives every operation a unique operationId', () => {
    const ids = operations().map(({ op }) => op.operationId);
    expect(ids.length).toBeGreaterThan(20);
    expect(ids.filter((id) => typeof id !== 'string' || id === '')).toEqual([]);
    expect(new Set(ids).size).toBe(ids.length);
    expect(doc.paths['/v1/sync']?.['get']?.operationId).toBe('sync');
    expect(doc.paths['/v1/rooms/{room}/send/{txnId}']?.['put']?.operationId).toBe('sendEvent');
  });

  it('documents errors once in components, per status with the codes of that status; every /v1 route has 503, device routes 429 with Retry-After', () => {
    const error400 = doc.components.schemas['Error400'];
    expect(error400?.allOf?.[0]?.$ref).toBe('#/components/schemas/Error');
    const codes400 = error400?.allOf?.[1]?.properties?.code?.enum ?? [];
    expect(codes400).toContain('SG_ERR_REQUEST_INVALID');
    expect(codes400).not.toContain('SG_ERR_CLI_USAGE');
    for (const code of codes400) expect(ERROR_TABLE[code as keyof typeof ERROR_TABLE].status).toBe(400);
    for (const { path, method, op } of operations()) {
      const responses = op.responses ?? {};
      const errorStatuses = Object.keys(responses).filter((s) => Number(s) >= 400);
      if (path !== '/readyz') {
        for (const s of errorStatuses) expect({ path, method, s, ref: responses[s]?.content?.['application/json']?.schema?.$ref }).toEqual({ path, method, s, ref: `#/components/schemas/Error${s}` });
      }
      if (path.startsWith('/v1/')) {
        expect({ path, method, has503: '503' in responses }).toEqual({ path, method, has503: true });
        expect(responses['503']?.headers).toHaveProperty('Retry-After');
      }
      if (path.startsWith('/v1/') && !path.startsWith('/v1/admin/')) {
        expect({ path, method, has429: '429' in responses }).toEqual({ path, method, has429: true });
        expect(responses['429']?.headers).toHaveProperty('Retry-After');
        expect(responses['429']?.headers).toHaveProperty('RateLimit-Remaining');
      }
    }
    // only the errors a route can return: no 404 on a list, no 429 on admin routes
    expect(Object.keys(doc.paths['/v1/admin/users']?.['get']?.responses ?? {})).not.toContain('404');
    expect(Object.keys(doc.paths['/v1/admin/users']?.['get']?.responses ?? {})).not.toContain('429');
  });

  it('documents /v1/stream as WebSocket upgrade and SSE, /metrics as text/plain, and examples on send and sync', () => {
    const stream = doc.paths['/v1/stream']?.['get']?.responses ?? {};
    expect(stream['101']).toBeDefined();
    expect(Object.keys(stream['200']?.content ?? {})).toEqual(['text/event-stream']);
    // the console's live room timeline: SSE, admin or viewer token
    const live = doc.paths['/v1/admin/rooms/{room}/live']?.['get'];
    expect(Object.keys(live?.responses?.['200']?.content ?? {})).toEqual(['text/event-stream']);
    expect(Object.keys(live?.responses ?? {})).toEqual(expect.arrayContaining(['401', '403', '404']));
    const metrics = doc.paths['/metrics']?.['get']?.responses?.['200']?.content ?? {};
    expect(Object.keys(metrics)[0]).toMatch(/^text\/plain/);
    const send = doc.paths['/v1/rooms/{room}/send/{txnId}']?.['put'];
    expect(send?.requestBody?.content?.['application/json']?.example).toMatchObject({ kind: 'message' });
    expect(send?.responses?.['200']?.content?.['application/json']?.example).toHaveProperty('eventId');
    expect(doc.paths['/v1/sync']?.['get']?.responses?.['200']?.content?.['application/json']?.example).toHaveProperty('next');
  });
});
