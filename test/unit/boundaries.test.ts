/**
 * The import boundaries (docs/architecture.md, "Code layout and import boundaries") are enforced by lint; this proves the
 * rules fire (a rule that cannot fail would be a check that cannot fail).
 */
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const eslint = new ESLint({ cwd: new URL('../..', import.meta.url).pathname });

async function problems(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).filter((m) => m.ruleId === '@typescript-eslint/no-restricted-imports').map((m) => m.message);
}

describe('import boundaries', () => {
  it('adapters may import src/core and src/log only, and never each other', async () => {
    expect(await problems('adapters/mqtt/x.ts', "import type { Adapter } from '../../src/core/adapter.js';\nimport type { Logger } from '../../src/log/index.js';\nexport type A = [Adapter, Logger];\n")).toEqual([]);
    expect(await problems('adapters/mqtt/x.ts', "import { createEventLog } from '../../src/eventlog/index.js';\nexport const a = createEventLog;\n")).toHaveLength(1);
    expect(await problems('adapters/mqtt/x.ts', "import { createIngestSink } from '../../src/bridge/ingest.js';\nexport const a = createIngestSink;\n")).toHaveLength(1);
    expect(await problems('adapters/mqtt/x.ts', "import { x } from '../xmpp/index.js';\nexport const a = x;\n")).toHaveLength(1);
    expect(await problems('adapters/matrix/x.ts', "import Fastify from 'fastify';\nexport const a = Fastify;\n")).toHaveLength(1);
  });

  it('src/config and src/cli import no adapter: only src/runtime/adapter-list.ts does, and src/config reads nothing else of src/runtime', async () => {
    const adapterImport = (path: string) => `import { a } from '../../adapters/${path}';\nexport const b = a;\n`;
    expect(await problems('src/runtime/adapter-list.ts', adapterImport('xmpp/index.js'))).toEqual([]);
    expect(await problems('src/config/x.ts', adapterImport('xmpp/config.js'))).toHaveLength(1);
    expect(await problems('src/cli/x.ts', adapterImport('matrix/config.js'))).toHaveLength(1);
    expect(await problems('src/cli/x.ts', adapterImport('xmpp/prosody-config.js'))).toHaveLength(1);
    expect(await problems('src/runtime/x.ts', adapterImport('mqtt/index.js'))).toHaveLength(1);
    expect(await problems('src/runtime/gateway.ts', adapterImport('matrix/descriptor.js'))).toHaveLength(1);
    expect(await problems('src/config/x.ts', "import { ADAPTERS } from '../runtime/adapter-list.js';\nexport const a = ADAPTERS;\n")).toEqual([]);
    expect(await problems('src/config/x.ts', "import { createGateway } from '../runtime/gateway.js';\nexport const a = createGateway;\n")).toHaveLength(1);
    expect(await problems('src/cli/x.ts', "import { ADAPTERS } from '../runtime/adapter-list.js';\nexport const a = ADAPTERS;\n")).toEqual([]);
  });

  it('only src/eventlog imports ioredis', async () => {
    expect(await problems('src/eventlog/x.ts', "import { Redis } from 'ioredis';\nexport const a = Redis;\n")).toEqual([]);
    expect(await problems('src/bridge/x.ts', "import { Redis } from 'ioredis';\nexport const a = Redis;\n")).toHaveLength(1);
    expect(await problems('src/http/x.ts', "import { Redis } from 'ioredis';\nexport const a = Redis;\n")).toHaveLength(1);
  });

  it('src/http sees the EventLog port, not its implementations; src/core imports nothing of ours', async () => {
    expect(await problems('src/http/x.ts', "import { createEventLog } from '../eventlog/index.js';\nexport const a = createEventLog;\n")).toHaveLength(1);
    expect(await problems('src/http/x.ts', "import type { EventLog } from '../core/ports.js';\nexport type A = EventLog;\n")).toEqual([]);
    expect(await problems('src/core/x.ts', "import { createLogger } from '../log/index.js';\nexport const a = createLogger;\n")).toHaveLength(1);
    expect(await problems('src/core/x.ts', "import { readFile } from 'node:fs/promises';\nexport const a = readFile;\n")).toHaveLength(1);
  });
});
