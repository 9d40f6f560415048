/**
 * A real browser for the console tests: Debian's `chromium`, driven by
 * playwright-core with `executablePath` (Playwright's own browser download is
 * never used). Each launch gets a fresh profile in a temp dir.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM_PATH = process.env['CHROMIUM'] ?? '/usr/bin/chromium';

export const MISSING_CHROMIUM = `chromium is not installed at ${CHROMIUM_PATH}: install the Debian package \`chromium\` (\`apt-get install -y chromium\`, or run .ci/install-services.sh as root)`;

export interface TestBrowser {
  /** one browser profile; each page has its own sessionStorage, so two pages can be signed in with two tokens */
  readonly context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM_PATH)) throw new Error(MISSING_CHROMIUM);
  const profile = await mkdtemp(join(tmpdir(), 'sg-chromium-'));
  // a fresh --user-data-dir: Playwright passes the profile directory of a persistent context as that flag
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}
