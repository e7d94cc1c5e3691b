// The npm scripts a person types: `--help` answers with the usage (exit 0), a mistyped command
// line prints it and exits 2, never a stack trace. These checks run before any tool is called.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
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
