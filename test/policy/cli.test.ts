// The policy commands a user runs: `npm run policy -- explain` against the real OPA, and
// `npm run policy:bundle`.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const node = (script: string, ...args: string[]) =>
  spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', script), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

describe('npm run policy -- explain', () => {
  it('explains a gateway denial with its reason, exiting 1', () => {
    const r = node('policy.ts', 'explain', '--client', 'dashboard', '--method', 'DELETE', '--path', '/api/v1/sandboxes/x');
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('DENIED: client dashboard, DELETE /api/v1/sandboxes/x');
    expect(r.stdout).toContain('reason method_not_allowed');
  }, 30_000);

  it('explains an egress allow, exiting 0', () => {
    const r = node('policy.ts', 'explain', '--tier', 'standard', '--service', 'github', '--method', 'GET', '--path', '/repos/o/r/pulls?page=2');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('ALLOWED: a standard sandbox calling github');
    expect(r.stdout).toMatch(/tier=standard/);
  }, 30_000);

  it('says how to call it when arguments are missing', () => {
    const r = node('policy.ts', 'explain', '--client', 'ci');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--path is required');
    expect(r.stderr).toContain('usage:');
  });
});

describe('npm run policy:bundle', () => {
  it('writes build/bundles/agentd-bundle.tar.gz with data.json inside the declared roots', () => {
    const r = node('policy-bundle.ts');
    expect(r.status, r.stderr).toBe(0);
    const tar = gunzipSync(readFileSync(join(REPO_ROOT, 'build/bundles/agentd-bundle.tar.gz'))).toString('latin1');
    expect(tar).toContain('agentd/config/data.json');
    expect(tar).toContain('"roots":["agentd"]');
    const again = node('policy-bundle.ts');
    expect(again.stdout.match(/revision (\w+)/)?.[1]).toBe(r.stdout.match(/revision (\w+)/)?.[1]);
  });
});
