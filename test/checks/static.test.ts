// Static checks that run with every `npm test`: the TypeScript of the whole repository type-checks
// under the strict tsconfig, passes Biome's linter and formatter (biome.json) and has no unused
// file, export or dependency by knip (knip.json), and the Go modules in the repository that carry
// tests pass `go vet` and `go test`. All fail loudly: a missing tool is a failure, never a skip.
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO_ROOT, run } from '../../scripts/local/tools.ts';

/** Go: on PATH, else where the toolchain scripts find it (scripts/lib.sh). */
function goBinary(): string {
  const onPath = run('sh', ['-c', 'command -v go']).stdout.trim();
  if (onPath) return onPath;
  if (existsSync('/usr/local/go/bin/go')) return '/usr/local/go/bin/go';
  throw new Error('go is not installed: the Go modules under scripts/ need Go (>= 1.26) to be tested');
}

/** Directories under scripts/ holding a go.mod and at least one _test.go file. */
function goModulesWithTests(): string[] {
  const out: string[] = [];
  const walk = (dir: string, module: string | undefined): boolean => {
    let tests = false;
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) {
        const inner = existsSync(join(p, 'go.mod')) ? p : module;
        if (walk(p, inner) && inner === module) tests = true;
      } else if (name.endsWith('_test.go')) {
        tests = true;
      }
    }
    if (module === dir && tests) out.push(dir);
    return tests;
  };
  walk(join(REPO_ROOT, 'scripts'), undefined);
  return out.sort();
}

describe('static checks', () => {
  it('tsc --noEmit (strict) over the whole repository', () => {
    const r = run(join(REPO_ROOT, 'node_modules/.bin/tsc'), ['-p', join(REPO_ROOT, 'tsconfig.json'), '--noEmit'], { cwd: REPO_ROOT });
    expect(r.stdout + r.stderr, 'type errors').toBe('');
    expect(r.code).toBe(0);
  }, 300_000);

  it('biome: the linter and the formatter (line width 160, biome.json) find nothing to change', () => {
    // `npm run lint` applies the formatter's changes and the safe lint fixes.
    const r = run(join(REPO_ROOT, 'node_modules/.bin/biome'), ['ci', '--error-on-warnings', '--colors=off', '.'], { cwd: REPO_ROOT });
    expect(r.code, (r.stdout + r.stderr).slice(-6000)).toBe(0);
  }, 120_000);

  it('knip: no unused file, export or dependency, and no dependency or binary used but unlisted (knip.json)', () => {
    // An export used only in its own file loses `export`; one used nowhere is deleted.
    const r = run(join(REPO_ROOT, 'node_modules/.bin/knip'), ['--no-progress'], { cwd: REPO_ROOT });
    expect(r.code, r.stdout + r.stderr).toBe(0);
  }, 120_000);

  const modules = goModulesWithTests();
  it('finds the Go modules with tests', () => {
    expect(modules.map((m) => relative(REPO_ROOT, m))).toContain('scripts/tools/opa-envoy');
  });

  it.each(modules.map((m) => [relative(REPO_ROOT, m), m]))(
    'go vet and go test in %s',
    (_name, dir) => {
      const go = goBinary();
      // The same settings as the tool builds (scripts/tools/cache.sh): static, module mode.
      const env = { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod' };
      const vet = run(go, ['vet', './...'], { cwd: dir, env });
      expect(vet.code, vet.stdout + vet.stderr).toBe(0);
      const test = run(go, ['test', './...'], { cwd: dir, env });
      expect(test.code, test.stdout + test.stderr).toBe(0);
      expect(test.stdout).toMatch(/^ok\s/m);
    },
    900_000,
  );
});
