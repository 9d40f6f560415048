/**
 * The operator console in a real browser (Debian's chromium driven by
 * playwright-core), against a real Redis and Mosquitto (with an ACL file) and
 * a gateway with an MQTT link: sign in (a wrong token refused), a message
 * sent over HTTP shown `delivered`; the broker stopped → `pending`, then
 * `delivered` once it is back; the broker's ACL refusing the out topic →
 * `retrying`, then under Dead letters; a viewer sees it and cannot replay;
 * ACL fixed, Replay → the subscriber gets it exactly once and the timeline
 * says `delivered`; Trace finds it; a script-injection body runs nothing.
 * The room page is live: a message sent while it is open appears and changes
 * state with no reload and no request after the one stream it opened.
 * Screenshots of each page go to .tmp/console-shots (and, with
 * UPDATE_DOCS_SCREENSHOT=1, the room page to docs/console.png).
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectAsync, type MqttClient } from 'mqtt';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { launchChromium, type TestBrowser } from '../harness/browser.js';
import { waitFor } from '../harness/free-port.js';
import { GATEWAY_ADMIN_TOKEN, startGateway, type TestGateway } from '../harness/gateway.js';
import { startMosquitto, type MosquittoBroker } from '../harness/mosquitto.js';
import { testPrefix } from '../harness/redis.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const SHOTS = join(root, '.tmp', 'console-shots');
const VIEWER = 'console-viewer-token-0123456789';
const OPEN_ACL = 'topic readwrite #';
const DENY_OUT_ACL = 'topic read #\ntopic readwrite plant/#';
const DEADLINE = { timeoutMs: 30_000, intervalMs: 200 };

let broker: MosquittoBroker;
let gw: TestGateway;
let chrome: TestBrowser;
let watcher: MqttClient;
const received: string[] = [];

beforeAll(async () => {
  // the browser first: a machine without chromium fails here, naming the package
  chrome = await launchChromium();
  const { buildConsole } = (await import(join(root, 'scripts', 'build-console.mjs'))) as { buildConsole: (out?: string, o?: { typecheck?: boolean }) => Promise<unknown> };
  await buildConsole(undefined, { typecheck: false });
  await mkdir(SHOTS, { recursive: true });
  broker = await startMosquitto({ useEnv: false, acl: OPEN_ACL });
  gw = await startGateway({
    redisUrl: inject('redisUrl'),
    prefix: testPrefix('console'),
    config: {
      http: { port: 0, adminToken: GATEWAY_ADMIN_TOKEN, viewerTokens: [VIEWER], console: true, rateLimit: { perSecond: 10_000, burst: 10_000 } },
      rooms: [{ id: 'plant', name: 'Plant', links: [{ endpoint: 'mqtt', target: 'plant/+device/alert', options: { decode: 'text' } }] }],
      adapters: { mqtt: { type: 'mqtt', url: broker.url, clientId: `sg-console-${process.pid}`, reconnect: { minMs: 100, maxMs: 500 } } },
    },
    // attempts far enough apart for the live page (delivery state re-derived every second) to show `retrying`
    delivery: { maxAttempts: 4, backoffBaseMs: 1500, backoffMaxMs: 3000 },
  });
  await waitFor(async () => (await gw.gateway.status()).adapters['mqtt']?.ready === true, { ...DEADLINE, what: 'the MQTT adapter to connect' });
  watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: `console-watch-${process.pid}`, reconnectPeriod: 200 });
  watcher.on('message', (_topic, payload) => received.push(payload.toString()));
  await watcher.subscribeAsync('sg/v1/rooms/plant/out', { qos: 1 });
});

afterAll(async () => {
  await chrome?.close();
  await watcher?.endAsync(true).catch(() => undefined);
  await gw?.stop();
  await broker?.stop();
});

async function signIn(page: Page, token: string): Promise<void> {
  await page.goto(`${gw.url}/console/`);
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** The timeline row of the message with this body, once it shows `state` for the MQTT link. */
async function waitForRowState(page: Page, body: string, state: string, seen?: (text: string) => void): Promise<void> {
  await waitFor(
    async () => {
      const row = page.locator('tr').filter({ hasText: body }).last();
      if ((await row.count()) === 0) return false;
      const text = await row.innerText();
      seen?.(text);
      return text.includes(state);
    },
    { ...DEADLINE, what: `"${body}" to show ${state}` },
  );
}

async function openRoom(page: Page): Promise<void> {
  await page.getByRole('link', { name: 'Rooms', exact: true }).click();
  await page.getByRole('link', { name: 'plant' }).click();
  await page.getByRole('heading', { name: 'Room plant' }).waitFor();
}

describe('the console in chromium', () => {
  it('signs in, shows delivery states through an outage and a refusal, replays once as admin only, traces, and runs no markup', async () => {
    const page = await chrome.context.newPage();
    page.setDefaultTimeout(15_000);
    const device = await gw.deviceToken('op', ['plant']);
    const send = async (txn: string, body: string) => (await gw.device<{ eventId: string }>(device, 'PUT', `/v1/rooms/plant/send/${txn}`, { kind: 'message', content: { body } })).body.eventId;

    // sign-in: a wrong token is refused with an error and no navigation
    await signIn(page, 'not-the-token-of-this-gateway');
    await expect.poll(async () => page.getByRole('alert').innerText()).toMatch(/not accepted/);
    expect(await page.getByRole('link', { name: 'Rooms' }).count()).toBe(0);
    await page.screenshot({ path: join(SHOTS, 'signin-refused.png') });
    await signIn(page, GATEWAY_ADMIN_TOKEN);
    for (const name of ['Overview', 'Rooms', 'Trace', 'Dead letters', 'Rules', 'Devices']) await page.getByRole('link', { name, exact: true }).waitFor();
    // the token is in this tab's sessionStorage, not in the URL or a cookie
    expect(page.url()).not.toContain(GATEWAY_ADMIN_TOKEN);
    expect(await chrome.context.cookies()).toEqual([]);

    // Overview: the adapter, connected
    await page.getByRole('link', { name: 'Overview', exact: true }).click();
    await page.getByRole('row').filter({ hasText: 'mqtt' }).getByText('connected', { exact: true }).waitFor();
    // lag per link: the room's MQTT link, caught up
    const linkRow = page.getByRole('table', { name: 'Lag per link' }).getByRole('row').filter({ hasText: 'plant/+device/alert' });
    await linkRow.waitFor();
    // events in and out per second (all replicas), then the lag
    const cells = (await linkRow.getByRole('cell').allInnerTexts()).map((t) => t.trim());
    expect(cells).toEqual(['mqtt', 'plant/+device/alert', expect.stringMatching(/^\d+\.\d$/), expect.stringMatching(/^\d+\.\d$/), '0', '0.0', 'no', '0']);
    await page.getByRole('columnheader', { name: 'In (events/s, all replicas)' }).waitFor();
    await page.screenshot({ path: join(SHOTS, 'overview.png') });

    // delivered; a markup body shown as text, running nothing
    const first = await send('c1', 'pump seven pressure low');
    const xss = '<img src=x onerror="window.__sg_pwned=1">boom';
    await send('c2', xss);
    // the room page follows the live stream: count what it asks for while it stays open
    const roomCalls = { timeline: 0, live: 0 };
    const countRoomCalls = (request: { url(): string }) => {
      const path = new URL(request.url()).pathname;
      if (path === '/v1/admin/rooms/plant/timeline') roomCalls.timeline++;
      if (path === '/v1/admin/rooms/plant/live') roomCalls.live++;
    };
    page.on('request', countRoomCalls);
    await openRoom(page);
    // a mark in the page's window: gone if the page were reloaded
    await page.evaluate(() => ((globalThis as unknown as { __sg_mark?: number }).__sg_mark = 1));
    await waitForRowState(page, 'pump seven pressure low', 'delivered');
    await page.getByText(xss).waitFor();
    expect(await page.evaluate(() => (globalThis as unknown as { __sg_pwned?: number }).__sg_pwned)).toBeUndefined();
    expect(await page.locator('main img').count()).toBe(0);

    // the broker away: pending (never dead-lettered for it), delivered once it is back
    await broker.pause();
    await waitFor(async () => (await gw.gateway.status()).adapters['mqtt']?.connected === false, { ...DEADLINE, what: 'the adapter to see the broker gone' });
    await send('c3', 'boiler two offline');
    await waitForRowState(page, 'boiler two offline', 'pending');
    await page.screenshot({ path: join(SHOTS, 'room-pending.png') });
    await broker.resume();
    await waitForRowState(page, 'boiler two offline', 'delivered');
    // sent while the page was open, shown and updated without a reload, a poll, or a second request
    expect(await page.evaluate(() => (globalThis as unknown as { __sg_mark?: number }).__sg_mark)).toBe(1);
    expect(roomCalls).toEqual({ timeline: 0, live: 1 });
    page.off('request', countRoomCalls);

    // the broker refuses the out topic: retrying with the error, then a dead letter
    await waitFor(async () => (await gw.gateway.status()).adapters['mqtt']?.ready === true, { ...DEADLINE, what: 'the adapter to reconnect' });
    await broker.setAcl(DENY_OUT_ACL);
    const refused = await send('c4', 'valve four stuck');
    let retryingRow = '';
    await waitForRowState(page, 'valve four stuck', 'dead-lettered', (text) => {
      if (text.includes('retrying')) retryingRow = text;
    });
    expect(retryingRow).toMatch(/retrying.*attempt \d/s);
    await page.screenshot({ path: join(SHOTS, 'room.png') });
    if (process.env['UPDATE_DOCS_SCREENSHOT'] === '1') await copyFile(join(SHOTS, 'room.png'), join(root, 'docs', 'console.png'));

    await page.getByRole('link', { name: 'Dead letters', exact: true }).click();
    const deadRow = page.locator('tr').filter({ hasText: 'valve four stuck' });
    await deadRow.waitFor();
    await page.screenshot({ path: join(SHOTS, 'dead-letters.png') });

    // a viewer sees it and has no usable Replay (its own tab: its own sessionStorage)
    const viewerPage = await chrome.context.newPage();
    viewerPage.setDefaultTimeout(15_000);
    // keyboard only: Tab to the token field, type, Enter; then Tab to the link and Enter
    await viewerPage.goto(`${gw.url}/console/`);
    await viewerPage.keyboard.press('Tab');
    expect(await viewerPage.getByLabel('Admin token').evaluate((el) => el === el.ownerDocument.activeElement)).toBe(true);
    await viewerPage.keyboard.type(VIEWER);
    await viewerPage.keyboard.press('Enter');
    const deadLink = viewerPage.getByRole('link', { name: 'Dead letters', exact: true });
    await deadLink.waitFor();
    for (let i = 0; i < 10 && !(await deadLink.evaluate((el) => el === el.ownerDocument.activeElement)); i++) await viewerPage.keyboard.press('Tab');
    await viewerPage.keyboard.press('Enter');
    await viewerPage.getByRole('heading', { name: 'Dead letters' }).waitFor();
    await viewerPage.locator('tr').filter({ hasText: 'valve four stuck' }).waitFor();
    const replayButtons = viewerPage.getByRole('button', { name: /replay/i });
    expect(await replayButtons.count()).toBeGreaterThan(0);
    for (let i = 0; i < (await replayButtons.count()); i++) expect(await replayButtons.nth(i).isEnabled()).toBe(false);
    await viewerPage.screenshot({ path: join(SHOTS, 'dead-letters-viewer.png') });
    await viewerPage.close();

    // Discard asks first (focus on Cancel, Escape cancels), then removes it
    await send('c4b', 'valve five stuck');
    const discardRow = page.locator('tr').filter({ hasText: 'valve five stuck' });
    await discardRow.waitFor({ timeout: 60_000 });
    await discardRow.getByRole('button', { name: 'Discard' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    expect(await dialog.getByRole('button', { name: 'Cancel' }).evaluate((el) => el === el.ownerDocument.activeElement)).toBe(true);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    expect(await discardRow.count()).toBe(1);
    await discardRow.getByRole('button', { name: 'Discard' }).click();
    await dialog.getByRole('button', { name: 'Discard' }).click();
    await page.getByRole('status').filter({ hasText: 'Discarded 1 of 1' }).waitFor();
    await discardRow.waitFor({ state: 'detached' });

    // ACL fixed, Replay: received exactly once, the timeline says delivered
    await broker.setAcl(OPEN_ACL);
    await deadRow.getByRole('button', { name: 'Replay' }).click();
    await page.getByRole('status').filter({ hasText: 'Replayed 1 of 1' }).waitFor();
    // the audit log under Dead letters: the discard and the replay, by the admin
    const auditRows = page.getByRole('table', { name: 'Audit log' }).getByRole('row');
    await auditRows.filter({ hasText: 'replay' }).waitFor();
    const auditText = (await auditRows.allInnerTexts()).slice(1).map((t) => t.replace(/\s+/g, ' ').trim());
    expect(auditText).toEqual([expect.stringMatching(/ admin replay \d+:\d+-\d+ 1 of 1$/), expect.stringMatching(/ admin discard \d+:\d+-\d+ 1 of 1$/)]);
    await page.screenshot({ path: join(SHOTS, 'dead-letters-audit.png') });
    await waitFor(() => received.some((p) => p.includes('valve four stuck')), { ...DEADLINE, what: 'the subscriber to get the replayed message' });
    await send('c5', 'all clear');
    await waitFor(() => received.some((p) => p.includes('all clear')), { ...DEADLINE, what: 'the message sent after the replay' });
    expect(received.filter((p) => p.includes('valve four stuck'))).toHaveLength(1);
    await openRoom(page);
    await waitForRowState(page, 'valve four stuck', 'delivered');
    await waitForRowState(page, 'valve five stuck', 'discarded');
    expect(received.some((p) => p.includes('valve five stuck'))).toBe(false);

    // Trace by event id
    await page.getByRole('link', { name: 'Trace', exact: true }).click();
    await page.getByLabel('Event or native id').fill(first);
    await page.getByLabel('Event or native id').press('Enter');
    const delivery = page.getByRole('row').filter({ hasText: 'plant/+device/alert' });
    await delivery.getByText('delivered').waitFor();
    expect(await page.getByRole('row').filter({ hasText: 'Event id' }).innerText()).toContain(first);
    await page.screenshot({ path: join(SHOTS, 'trace.png') });
    expect(refused).toBeTruthy();

    // Rules and Devices render for the operator too
    await page.getByRole('link', { name: 'Rules', exact: true }).click();
    await page.getByRole('button', { name: 'Test rule' }).click();
    await page.getByText('"body": "pump-7: high"').waitFor();
    await page.screenshot({ path: join(SHOTS, 'rules.png') });
    await page.getByRole('link', { name: 'Devices', exact: true }).click();
    await page.getByRole('row').filter({ hasText: 'op' }).first().waitFor();
    await page.screenshot({ path: join(SHOTS, 'devices.png') });

    // light and dark themes follow the system setting
    const background = () => page.locator('body').evaluate((body) => body.ownerDocument.defaultView?.getComputedStyle(body).backgroundColor ?? '');
    await page.emulateMedia({ colorScheme: 'light' });
    const light = await background();
    await page.emulateMedia({ colorScheme: 'dark' });
    const dark = await background();
    expect(light).toBe('rgb(255, 255, 255)');
    expect(dark).not.toBe(light);
    await page.screenshot({ path: join(SHOTS, 'devices-dark.png') });
    await page.close();
  });

  it('serves the console with a strict Content-Security-Policy, and not at all with http.console: false', async () => {
    const res = await fetch(`${gw.url}/console/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);

    const off = await startGateway({ config: { http: { port: 0, adminToken: GATEWAY_ADMIN_TOKEN, console: false } } });
    try {
      expect((await fetch(`${off.url}/console/`)).status).toBe(404);
    } finally {
      await off.stop();
    }
  });
});
