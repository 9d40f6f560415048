// Lint: typescript-eslint recommended plus the import boundaries of docs/architecture.md ("Code layout and import boundaries").
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ioredisOnlyInEventlog = {
  name: 'ioredis',
  message: 'Only src/eventlog talks to Redis (docs/architecture.md: the core talks to ports).',
};

const onlyTheAdapterList = {
  group: ['**/adapters/*', '**/adapters/**'],
  message: 'Only src/runtime/adapter-list.ts imports adapters; read its descriptor list (README: "Adding an adapter").',
};

const restrict = (patterns, paths = [ioredisOnlyInEventlog]) => ['error', { paths, patterns }];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'helm/**', '.tmp/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module' },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'separate-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-console': 'error',
      '@typescript-eslint/no-restricted-imports': restrict([]),
    },
  },
  {
    files: ['src/core/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([
        { group: ['../*', '!../core/*'], message: 'src/core is pure and imports nothing of ours outside src/core.' },
        { group: ['node:fs*', 'node:net', 'node:http', 'fastify', 'pino', 'mqtt', '@xmpp/*', 'matrix-bot-sdk'], message: 'src/core does no I/O.', allowTypeImports: true },
      ]),
    },
  },
  {
    files: ['adapters/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([
        {
          group: ['**/src/*', '!**/src/core', '!**/src/core/**', '!**/src/log', '!**/src/log/**'],
          message: 'Adapters import only src/core and src/log (docs/architecture.md: import boundaries).',
        },
        { group: ['**/adapters/*', '**/adapters/**', '../xmpp/**', '../mqtt/**', '../matrix/**'], message: 'Adapters never import each other.' },
        { group: ['fastify', 'fastify/*', '@fastify/*'], message: 'Adapters do not see the HTTP layer.' },
      ]),
    },
  },
  {
    files: ['src/http/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([
        { group: ['**/eventlog', '**/eventlog/**', '**/runtime/**', '**/adapters/**'], message: 'src/http sees the EventLog port (src/core), not its implementations.' },
      ]),
    },
  },
  {
    files: ['src/bridge/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([
        { group: ['**/eventlog', '**/eventlog/**', '**/runtime/**', '**/http/**', '**/adapters/**'], message: 'src/bridge works through ports; src/runtime wires it.' },
      ]),
    },
  },
  {
    files: ['src/eventlog/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': restrict([{ group: ['**/http/**', '**/runtime/**', '**/bridge/**', '**/adapters/**'], message: 'The log knows nothing above it.' }], []) },
  },
  {
    // Adapters are plug-ins: the one list of descriptors in src/runtime/adapter-list.ts names them, nothing else under src/.
    files: ['src/cli/**/*.ts', 'src/runtime/**/*.ts', 'src/log/**/*.ts'],
    ignores: ['src/runtime/adapter-list.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': restrict([onlyTheAdapterList]) },
  },
  {
    files: ['src/config/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': restrict([
        onlyTheAdapterList,
        { group: ['**/runtime/*', '**/runtime/**', '!**/runtime/adapter-list.js'], message: 'src/config reads the adapter list of src/runtime and nothing else of it.' },
      ]),
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': 'off', 'no-console': 'off' },
  },
  {
    files: ['src/cli/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    // build helpers run by npm scripts: plain Node, talking to the person at the terminal
    files: ['scripts/**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
    rules: { 'no-console': 'off' },
  },
);
