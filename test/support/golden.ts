// Golden files: rendered output compared byte for byte with a reviewed copy under test/golden.
// `UPDATE_GOLDEN=1` rewrites the copies first (locally, to be reviewed and committed); in CI it
// is refused, so a CI run can never turn a changed rendering into a pass by rewriting its own
// expectation.
import { expect } from 'vitest';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const GOLDEN_ROOT = join(REPO_ROOT, 'test/golden');

/** The command that rewrites the golden files of the running test file. */
function rerun(): string {
  const file = expect.getState().testPath;
  return `UPDATE_GOLDEN=1 npx vitest run ${file ? relative(REPO_ROOT, file) : 'test/unit test/monitoring'}`;
}

/**
 * Whether this run rewrites golden files: `UPDATE_GOLDEN=1`, and never when `CI` is set (any
 * non-empty value): then it throws, failing the test that asked.
 */
function updatingGolden(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env['UPDATE_GOLDEN'] !== '1') return false;
  if (env['CI'] !== undefined && env['CI'] !== '') {
    throw new Error(
      `UPDATE_GOLDEN=1 is refused because CI is set (CI=${env['CI']}): golden files are not rewritten in CI. ` +
        `Run the tests locally with \`${rerun()}\`, review the diff and commit the files.`,
    );
  }
  return true;
}

/** Compares `text` with test/golden/<name>; UPDATE_GOLDEN=1 rewrites the file first. */
export function golden(name: string, text: string): void {
  const p = join(GOLDEN_ROOT, name);
  if (updatingGolden()) {
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, text);
  }
  if (!existsSync(p)) throw new Error(`golden file ${relative(REPO_ROOT, p)} is missing: run \`${rerun()}\` locally, review it and commit it`);
  expect(text, `golden file ${relative(REPO_ROOT, p)} (to accept a change: \`${rerun()}\`, review the diff)`).toBe(readFileSync(p, 'utf8'));
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? listFiles(p) : [p];
  });
}

/**
 * Compares a whole directory, test/golden/<dir>, with `files` (relative path -> content):
 * the same set of files (a golden file nothing renders any more is stale; a rendered file
 * without one is unreviewed) and the same bytes. UPDATE_GOLDEN=1 writes every file first
 * (it deletes nothing: a stale file still fails, to be removed by hand).
 */
export function goldenDir(dir: string, files: Readonly<Record<string, string>>): void {
  const root = join(GOLDEN_ROOT, dir);
  if (updatingGolden()) {
    for (const [p, c] of Object.entries(files)) {
      mkdirSync(dirname(join(root, p)), { recursive: true });
      writeFileSync(join(root, p), c);
    }
  }
  const present = listFiles(root)
    .map((p) => relative(root, p))
    .sort();
  expect(present, `golden files in ${relative(REPO_ROOT, root)} (run \`${rerun()}\` locally and review)`).toEqual(Object.keys(files).sort());
  expect(present.length, `no golden file in ${relative(REPO_ROOT, root)}`).toBeGreaterThan(0);
  for (const [p, c] of Object.entries(files)) expect(c, `golden file ${relative(REPO_ROOT, join(root, p))}`).toBe(readFileSync(join(root, p), 'utf8'));
}
