// The GitHub workflow as a test: every job of .github/workflows/preview.yml, for every entry of its
// matrix, runs its own steps (read from the file, in order) in a fresh clone of this tree made a
// pull request (one policy change committed on top of a base branch), with the secrets standing
// in for a team's backend and passphrase. Each preview must show the whole stack and, above it,
// the decision diff of that policy change. A step the file gains that this
// test does not know how to run fails it: the workflow cannot rot unseen.
//
// Here the machine's tool cache stands in for actions/cache, and no Docker engine answers (the
// previews build no image and need none).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { pinnedVersions, REPO_ROOT } from '../../scripts/local/tools.ts';

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}
interface Job {
  'runs-on': string;
  strategy?: { matrix: Record<string, unknown[]> };
  env?: Record<string, string>;
  steps: Step[];
}

const WORKFLOW = join(REPO_ROOT, '.github/workflows/preview.yml');
const workflow = parse(readFileSync(WORKFLOW, 'utf8')) as { jobs: Record<string, Job> };

/** The pull request as GitHub describes it to the steps (`${{ github.X }}`). */
const GITHUB: Readonly<Record<string, string>> = { base_ref: 'pr-base', token: 'test-token', 'event.pull_request.number': '7' };

/** `${{ matrix.X }}`, `${{ secrets.X }}` and the `${{ github.X }}` above: the only expressions the steps may use. */
function expand(text: string, matrix: Record<string, unknown>, secrets: Record<string, string>): string {
  return text.replace(/\$\{\{\s*([^}]+?)\s*\}\}/g, (_, expr: string) => {
    const m = /^(matrix|secrets|github)\.([A-Za-z_][\w.-]*)$/.exec(expr);
    if (!m) throw new Error(`${WORKFLOW}: expression \${{ ${expr} }} is not one this test can evaluate (matrix.X, secrets.X, github.X)`);
    const value = m[1] === 'matrix' ? matrix[m[2]!] : m[1] === 'secrets' ? secrets[m[2]!] : GITHUB[m[2]!];
    if (value === undefined) throw new Error(`${WORKFLOW}: ${expr} has no value`);
    return String(value);
  });
}

/** The matrix's entries (every combination), or one empty entry. */
function entries(job: Job): Record<string, unknown>[] {
  let out: Record<string, unknown>[] = [{}];
  for (const [key, values] of Object.entries(job.strategy?.matrix ?? {})) out = out.flatMap((e) => values.map((v) => ({ ...e, [key]: v })));
  return out;
}

/** A clone of this repository with the working tree's changes on top: what a pull request's checkout holds. */
function freshCheckout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-workflow-'));
  const clone = spawnSync('git', ['clone', '-q', REPO_ROOT, dir], { encoding: 'utf8' });
  if (clone.status !== 0) throw new Error(`git clone failed: ${clone.stderr}`);
  const changed = spawnSync('git', ['ls-files', '-m', '-o', '--exclude-standard', '-z'], { cwd: REPO_ROOT, encoding: 'utf8' })
    .stdout.split('\0')
    .filter(Boolean);
  for (const f of changed) {
    if (!existsSync(join(REPO_ROOT, f))) continue;
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    cpSync(join(REPO_ROOT, f), join(dir, f));
  }
  const deleted = spawnSync('git', ['ls-files', '-d', '-z'], { cwd: REPO_ROOT, encoding: 'utf8' }).stdout.split('\0').filter(Boolean);
  for (const f of deleted) rmSync(join(dir, f), { force: true });
  return dir;
}

/** What each action the workflow uses amounts to here; any other action fails the test. */
function runAction(step: Step): void {
  const action = step.uses!.split('@')[0];
  if (action === 'actions/checkout') {
    // The fresh clone, with the history the decision diff compares against.
    expect(step.with?.['fetch-depth'], 'checkout fetches the base branch').toBe(0);
    return;
  }
  if (action === 'actions/setup-node') {
    // Any Node with npm starts scripts/run, which then installs the pinned one: same major, so nothing surprises.
    expect(String(step.with?.['node-version']), 'setup-node installs the pinned Node major').toBe(pinnedVersions()['NODE_VERSION']!.split('.')[0]);
    return;
  }
  if (action === 'actions/cache') {
    expect(step.with?.['path'], 'the cache holds the tool cache').toBe('~/.cache/agentd/tools');
    return;
  }
  throw new Error(`${WORKFLOW}: step uses ${step.uses}, which this test cannot run: teach runAction what it amounts to`);
}

describe('.github/workflows/preview.yml', () => {
  it('has the jobs this test runs, each running commands', () => {
    expect(Object.keys(workflow.jobs).sort()).toEqual(['preview-dev', 'preview-shared']);
    for (const job of Object.values(workflow.jobs)) expect(job.steps.filter((s) => s.run).length).toBeGreaterThan(0);
  });

  it('every job and matrix entry: its steps, in order, pass on a fresh clone of a pull request; each previews a whole stack and the policy change', () => {
    const dir = freshCheckout();
    // A pull request as GitHub checks it out: the tree on top of its base branch, with one policy change.
    const git = (...args: string[]) => {
      const r = spawnSync('git', ['-C', dir, '-c', 'user.name=test', '-c', 'user.email=test@example.invalid', ...args], { encoding: 'utf8' });
      expect(r.status, `git ${args.join(' ')}: ${r.stderr}`).toBe(0);
    };
    git('add', '-A');
    git('commit', '-q', '--allow-empty', '-m', 'the tree under test');
    git('update-ref', 'refs/remotes/origin/pr-base', 'HEAD');
    const tiers = join(dir, 'policy/data/rate-limit-tiers.yaml');
    writeFileSync(tiers, readFileSync(tiers, 'utf8').replace(/(premium:\s*\n\s*requests_per_minute:\s*)600\b/, '$11200'));
    expect(readFileSync(tiers, 'utf8')).toMatch(/premium:\s*\n\s*requests_per_minute:\s*1200/);
    git('commit', '-q', '-am', 'premium: twice the requests per minute');
    const state = mkdtempSync(join(tmpdir(), 'agentd-workflow-state-'));
    const secrets = { PULUMI_BACKEND_URL: `file://${state}`, PULUMI_CONFIG_PASSPHRASE: 'workflow-test-passphrase' };
    // GitHub's `gh`, as a stand-in that records the comment it would post.
    const bin = join(state, 'bin');
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'gh'),
      `#!/bin/sh\nprintf '%s\\n' "$*" > "${join(state, 'gh-args')}"\nwhile [ $# -gt 0 ]; do [ "$1" = --body-file ] && cp "$2" "${join(state, 'gh-body')}"; shift; done\n[ "$GH_TOKEN" = test-token ]\n`,
      { mode: 0o755 },
    );
    const base: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${bin}:${process.env['PATH']}`,
      CI: 'true',
      GITHUB_BASE_REF: GITHUB['base_ref'],
      DOCKER_HOST: `unix://${join(state, 'no-docker-engine.sock')}`,
    };
    for (const k of Object.keys(base)) if (k.startsWith('PULUMI_BACKEND') || k.startsWith('PULUMI_CONFIG_PASSPHRASE')) delete base[k];
    const previews: string[] = [];
    try {
      for (const [name, job] of Object.entries(workflow.jobs)) {
        for (const matrix of entries(job)) {
          const jobEnv = Object.fromEntries(Object.entries(job.env ?? {}).map(([k, v]) => [k, expand(v, matrix, secrets)]));
          for (const step of job.steps) {
            if (step.uses) {
              runAction(step);
              continue;
            }
            const command = expand(step.run!, matrix, secrets);
            const env = { ...base, ...jobEnv, ...Object.fromEntries(Object.entries(step.env ?? {}).map(([k, v]) => [k, expand(v, matrix, secrets)])) };
            // GitHub runs a step as `bash --noprofile --norc -eo pipefail {0}`.
            const r = spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', command], {
              cwd: dir,
              env,
              encoding: 'utf8',
              maxBuffer: 64 << 20,
              timeout: 600_000,
            });
            const out = `${r.stdout}\n${r.stderr}`;
            expect(r.status, `${name} ${JSON.stringify(matrix)}: ${step.name ?? command}\n${out.slice(-6000)}`).toBe(0);
            if (command.includes('npm run preview')) {
              expect(out, `${name} ${JSON.stringify(matrix)}: a preview of a whole stack`).toMatch(/\+ \d+ to create/);
              expect(out, `${name} ${JSON.stringify(matrix)}: the decision diff above it`).toContain(
                'Policy decisions against origin/pr-base (decided by OPA, ',
              );
              expect(out).toContain('    rate-limit tier premium: 600/min -> 1200/min\n');
              // `--diff` lists the packs run at the end and each violation with its level.
              expect(out, `${name} ${JSON.stringify(matrix)}: the policy pack ran`).toMatch(
                /Policy Packs run:\n.*\n\s+agentd-platform\|local\|\S+\/policy\/pack\/run\s/,
              );
              expect(out, `${name} ${JSON.stringify(matrix)}: the policy pack passes`).not.toContain('[mandatory]');
              previews.push(/--stack (\S+)/.exec(command)?.[1] ?? `${name}: no --stack`);
            }
          }
        }
      }
      // The pull request got the decision diff as a comment.
      expect(readFileSync(join(state, 'gh-args'), 'utf8')).toMatch(/^pr comment 7 --body-file build\/decision-diff\.md\n$/);
      const comment = readFileSync(join(state, 'gh-body'), 'utf8');
      expect(comment).toContain('### Policy decisions against `origin/pr-base`');
      expect(comment).toContain('\nrate-limit tier premium: 600/min -> 1200/min\n');
      expect(comment).toMatch(/\n\d+ changes? over \d+ requests per side, decided by OPA\n$/);
      // A change that breaks a mandatory rule of the policy pack (every workload as root) fails
      // the preview with the rule's message, as it would fail the workflow.
      const layout = join(dir, 'components/layout.ts');
      writeFileSync(layout, readFileSync(layout, 'utf8').replace(/export const RUN_AS_USER = \d+;/, 'export const RUN_AS_USER = 0;'));
      expect(readFileSync(layout, 'utf8')).toContain('export const RUN_AS_USER = 0;');
      const broken = spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', 'npm run preview -- --stack dev --without-images'], {
        cwd: dir,
        env: base,
        encoding: 'utf8',
        maxBuffer: 64 << 20,
        timeout: 600_000,
      });
      const brokenOut = `${broken.stdout}\n${broken.stderr}`;
      expect(broken.status, brokenOut.slice(-4000)).not.toBe(0);
      expect(brokenOut).toContain('[mandatory]  workloads-hardened  (docker:index:Container: agentd-agentd)');
      expect(brokenOut).toContain('Container agentd-agentd (workload) runs as root (user "0:0"): set a non-root uid:gid');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(state, { recursive: true, force: true });
    }
    expect(previews.sort()).toEqual(['dev', 'prod', 'staging']);
  }, 1_200_000);
});
