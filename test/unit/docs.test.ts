/**
 * The documentation a clone gets must be readable in that clone: every
 * relative link in README.md and docs/*.md stays inside the repository and
 * names a file or directory that is part of it (not a build output).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Directories the repository ignores (`name/` lines of .gitignore): a link into them points at something a clone does not have. */
function ignoredDirs(): string[] {
  return readFileSync(join(ROOT, '.gitignore'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^[^#!*]+\/$/.test(line))
    .map((line) => line.replace(/^\/|\/$/g, ''));
}

/** Link targets of a Markdown text: inline `[text](target)` and reference definitions `[name]: target`, outside fenced code. */
function linkTargets(markdown: string): string[] {
  const prose = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
  const targets: string[] = [];
  for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) targets.push(m[1] as string);
  for (const m of prose.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/gm)) targets.push(m[1] as string);
  return targets;
}

/** Problems with the relative links of `file` (a path relative to `root`) whose text is `markdown`. */
function linkProblems(root: string, file: string, markdown: string, ignored: readonly string[]): string[] {
  const problems: string[] = [];
  for (const target of linkTargets(markdown)) {
    // Other sites (http:, https:, mailto: …) and anchors within the page are not files.
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
    const path = decodeURIComponent(target.replace(/[?#].*$/, ''));
    if (isAbsolute(path)) {
      problems.push(`${file}: ${target} is an absolute path`);
      continue;
    }
    const inRepo = relative(root, resolve(root, dirname(file), path));
    if (inRepo.startsWith('..') || isAbsolute(inRepo)) {
      problems.push(`${file}: ${target} leaves the repository`);
      continue;
    }
    const top = inRepo.split(/[\\/]/)[0] ?? '';
    if (ignored.includes(top)) {
      problems.push(`${file}: ${target} points into ${top}/, which the repository ignores`);
      continue;
    }
    if (!existsSync(join(root, inRepo))) problems.push(`${file}: ${target} does not exist`);
  }
  return problems;
}

function docFiles(): string[] {
  const docs = existsSync(join(ROOT, 'docs')) ? readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`) : [];
  return ['README.md', ...docs];
}

describe('documentation links', () => {
  it('README.md and docs/*.md link only to files of this repository', () => {
    const ignored = ignoredDirs();
    const problems = docFiles().flatMap((file) => linkProblems(ROOT, file, readFileSync(join(ROOT, file), 'utf8'), ignored));
    expect(problems).toEqual([]);
  });

  it('the architecture and protocol documents exist and the README links them', () => {
    const readme = linkTargets(readFileSync(join(ROOT, 'README.md'), 'utf8'));
    expect(readme).toContain('docs/architecture.md');
    expect(readme).toContain('docs/protocols.md');
  });

  it('the check finds links that leave the repository, are absolute, point into ignored directories or at nothing', () => {
    const markdown = [
      'See [design](../shared/DESIGN.md), [abs](/etc/passwd), [built](dist/src/cli/main.js "the build"),',
      '[gone](docs/nothing-here.md#top), [ok](src/core/event.ts), [dir](helm/syncgate/), [web](https://example.org/x),',
      '[anchor](#the-event-log), [up and back](docs/../README.md).',
      '',
      '[ref]: ../../outside.md',
      '',
      '```md',
      '[in a code block](../ignored.md)',
      '```',
    ].join('\n');
    expect(linkProblems(ROOT, 'README.md', markdown, ['dist', 'node_modules'])).toEqual([
      'README.md: ../shared/DESIGN.md leaves the repository',
      'README.md: /etc/passwd is an absolute path',
      'README.md: dist/src/cli/main.js points into dist/, which the repository ignores',
      'README.md: docs/nothing-here.md#top does not exist',
      'README.md: ../../outside.md leaves the repository',
    ]);
    // Relative to the file's own directory: from docs/, `../src` is inside the repository.
    expect(linkProblems(ROOT, 'docs/x.md', '[core](../src/core/event.ts) [out](../../x.md)', [])).toEqual(['docs/x.md: ../../x.md leaves the repository']);
  });
});
