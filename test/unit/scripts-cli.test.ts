// The npm scripts a person types: `--help` answers with the usage (exit 0), a mistyped command
// line prints it and exits 2, never a stack trace. These checks run before any tool is called.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const node = (script: string, ...args: string[]) =>
  spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', script), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

describe('npm scripts on the command line', () => {
  it.each([
    ['up.ts', 'npm run up'],
    ['preview.ts', 'npm run preview'],
    ['destroy.ts', 'npm run destroy'],
    ['key.ts', 'npm run -s key'],
    ['render.ts', 'npm run render'],
  ])('%s answers --help with its usage and -h alike', (script, command) => {
    for (const flag of ['--help', '-h']) {
      const r = node(script, flag);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.startsWith(`usage: ${command}`)).toBe(true);
    }
  });

  it.each(['up.ts', 'preview.ts', 'destroy.ts', 'key.ts', 'render.ts'])('%s: --stack without a name prints the usage and exits 2', (script) => {
    const r = node(script, '--stack');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--stack needs a name');
    expect(r.stderr).toContain('usage:');
    expect(r.stderr).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it('render: an unknown argument or an --out without a directory exits 2 with the usage', () => {
    for (const args of [['--bogus'], ['--out']]) {
      const r = node('render.ts', ...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toContain('usage: npm run render');
    }
  });
});

/** Runs `npm run <script>` as a person does (through scripts/run, which installs nothing that is there). */
const npmRun = (script: string, ...args: string[]) =>
  spawnSync('npm', ['run', '-s', script, '--', ...args], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000 });
const npmScripts = Object.keys((JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts).sort();

describe('every npm script', () => {
  it('is covered here', () => {
    expect(npmScripts).toEqual([
      'agentd',
      'bench',
      'destroy',
      'dev',
      'key',
      'lint',
      'policy',
      'policy:bundle',
      'preview',
      'render',
      'setup',
      'test',
      'typecheck',
      'up',
    ]);
  });

  it.each(npmScripts)('npm run %s -- --help prints its usage and exits 0', (script) => {
    const r = npmRun(script, '--help');
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/usage:/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/\bat .*\.(ts|js|mjs):\d+/);
  });

  // npm test passes its arguments to vitest, which has its own options and errors.
  it.each(npmScripts.filter((s) => s !== 'test'))('npm run %s -- --no-such-option prints the usage and exits 2, never a stack trace', (script) => {
    const r = npmRun(script, '--no-such-option');
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(2);
    expect(r.stderr).toMatch(/usage:/);
    expect(r.stderr).toContain('--no-such-option');
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/\bat .*\.(ts|js|mjs):\d+/);
  });

  it.each(['up', 'preview', 'destroy', 'key', 'render'])('npm run %s -- --stack nosuch is refused with the known stacks (unless --create)', (script) => {
    const r = npmRun(script, '--stack', 'nosuch');
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain('no stack "nosuch": stacks/Pulumi.nosuch.yaml does not exist; known stacks: dev, prod, staging');
    expect(r.stderr).toContain('--create');
  });
});

describe('npm run policy -- explain', () => {
  it('answers --help after the command too, and an unknown option with the usage and exit 2', () => {
    const help = npmRun('policy', 'explain', '--help');
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain('usage:');
    const bad = npmRun('policy', 'explain', '--client', 'ci', '--bogus');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("Unknown option '--bogus'");
    expect(bad.stderr).toContain('usage:');
    expect(bad.stderr).not.toMatch(/\bat .*\.(ts|js|mjs):\d+/);
  });
});
