// `npm run policy -- diff` against the real OPA: the repository's policy/ copied twice into a
// scratch directory, one copy changed, both compared by diffPolicies (two OPAs, every decision
// asked over ext_authz gRPC); and the command itself, in this repository, whose working tree's
// policy is HEAD's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { formatChanges } from '../../policy/decision-diff.ts';
import { PolicyError } from '../../policy/spec.ts';
import { diffPolicies, type PolicyDiff } from '../../scripts/local/policy-diff.ts';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

let scratch: string;
/** A copy of the repository's policy/ named `name` in the scratch directory. */
const copyOfPolicy = (name: string) => {
  const dir = join(scratch, name);
  cpSync(join(REPO_ROOT, 'policy'), dir, { recursive: true });
  return { dir, label: name };
};
/** Changes one data file of a copy as data (parsed and written back by the YAML library). */
const edit = (policyDir: string, file: string, change: (doc: any) => void) => {
  const path = join(policyDir, 'data', file);
  const doc = parse(readFileSync(path, 'utf8'));
  change(doc);
  writeFileSync(path, stringify(doc));
};

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'agentd-policy-diff-test-'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('diffPolicies: two policy directories, decided by two real OPAs', () => {
  let changed: PolicyDiff;
  beforeAll(async () => {
    const base = copyOfPolicy('base');
    const head = copyOfPolicy('head');
    // operator: POST on /api/v1/sandboxes/*/intents no more (GET stays, under /api/v1/sandboxes/**).
    edit(head.dir, 'roles.yaml', (d) => {
      const rule = d.roles.operator.rules.find((r: { paths: string[] }) => r.paths.includes('/api/v1/sandboxes/*/intents'));
      rule.paths = rule.paths.filter((p: string) => p !== '/api/v1/sandboxes/*/intents');
    });
    // standard sandboxes may call slack; premium ones twice as often.
    edit(head.dir, 'sandbox-tiers.yaml', (d) => {
      d.tiers.standard.services.push('slack');
      d.tiers.premium.requests_per_minute = 600;
    });
    // github: a repository's own resource (a path no pattern named before).
    edit(head.dir, 'egress-services.yaml', (d) => {
      d.services.github.allowed_paths.push('/repos/*/*');
    });
    edit(head.dir, 'rate-limit-tiers.yaml', (d) => {
      d.tiers.premium = { requests_per_minute: 1200, requests_per_hour: 36000 };
    });
    // ci moves to premium; a reader bot arrives; the disabled client goes.
    edit(head.dir, 'clients.yaml', (d) => {
      d.clients.find((c: { id: string }) => c.id === 'ci').rate_limit_tier = 'premium';
      d.clients.push({ id: 'new-bot', description: 'A new dashboard.', role: 'reader', rate_limit_tier: 'default' });
      d.clients = d.clients.filter((c: { id: string }) => c.id !== 'retired');
    });
    changed = await diffPolicies(base, head);
  });

  it('says exactly what the change does to access and limits', () => {
    expect(formatChanges(changed.changes).split('\n')).toEqual([
      'client ci: POST /api/v1/sandboxes/x1/intents allow -> deny (method_not_allowed)',
      'client new-bot: added, allows POST on /agentd.v1.Agentd/GetSandbox, /agentd.v1.Agentd/Health, /agentd.v1.Agentd/ListIntents, ' +
        '/agentd.v1.Agentd/ListSandboxes, /agentd.v1.Agentd/Status; GET HEAD on /api/v1/sandboxes, /api/v1/sandboxes/deep/er, ' +
        '/api/v1/sandboxes/x1/intents, /api/v1/status',
      'client retired: removed, allowed nothing',
      'tier admin: github GET /repos/x1/x1 newly allowed',
      'tier admin: github POST /repos/x1/x1 newly allowed',
      'tier admin: github PUT /repos/x1/x1 newly allowed',
      'tier admin: github PATCH /repos/x1/x1 newly allowed',
      'tier premium: github GET /repos/x1/x1 newly allowed',
      'tier premium: github POST /repos/x1/x1 newly allowed',
      'tier premium: github PUT /repos/x1/x1 newly allowed',
      'tier premium: github PATCH /repos/x1/x1 newly allowed',
      'tier standard: github GET /repos/x1/x1 newly allowed',
      'tier standard: github POST /repos/x1/x1 newly allowed',
      'tier standard: github PUT /repos/x1/x1 newly allowed',
      'tier standard: github PATCH /repos/x1/x1 newly allowed',
      'tier standard: slack GET /api/chat.postMessage newly allowed',
      'tier standard: slack POST /api/chat.postMessage newly allowed',
      'tier standard: slack GET /api/conversations.history newly allowed',
      'tier standard: slack POST /api/conversations.history newly allowed',
      'tier standard: slack GET /api/conversations.list newly allowed',
      'tier standard: slack POST /api/conversations.list newly allowed',
      'client ci: rate limit standard (120/min, 3600/h) -> premium (1200/min, 36000/h)',
      'client new-bot: rate limit none -> default (60/min, 1800/h)',
      'tier premium: anthropic 300/min -> 600/min',
      'tier premium: github 300/min -> 600/min',
      'tier premium: openai 300/min -> 600/min',
      'tier premium: slack 300/min -> 600/min',
      'tier standard: slack not granted -> 60/min',
      'rate-limit tier premium: 600/min -> 1200/min',
      'rate-limit tier premium: 18000/h -> 36000/h',
    ]);
    expect(changed.base.revision).not.toBe(changed.head.revision);
  });

  it('asks both OPAs every request either side names, and records each change for --json', () => {
    // 5 clients (4 of each side) x 15 routes (the roles' 14, one outside) x 7 methods; 5 sandbox
    // tiers x 30 paths of the 5 services (25 of their allowlists, github's new one, one outside
    // each) x 7 methods.
    expect(changed.probes).toBe(5 * 15 * 7 + 5 * 30 * 7);
    expect(changed.changes.filter((c) => c.kind === 'gateway')).toHaveLength(3);
    expect(changed.changes.filter((c) => c.kind === 'egress')).toHaveLength(18);
    expect(changed.changes.filter((c) => c.kind === 'limit')).toHaveLength(9);
    expect(changed.changes[0]).toEqual({
      kind: 'gateway',
      subject: 'client ci',
      aspect: 'access',
      service: null,
      method: 'POST',
      path: '/api/v1/sandboxes/x1/intents',
      before: 'allow',
      after: 'deny',
      reasons: { before: null, after: 'method_not_allowed' },
    });
  });

  it('an unchanged copy: no decision changes, the same revision', async () => {
    const same = await diffPolicies(copyOfPolicy('same-base'), copyOfPolicy('same-head'));
    expect(same.changes).toEqual([]);
    expect(formatChanges(same.changes)).toBe('no decision changes');
    expect(same.head.revision).toBe(same.base.revision);
    expect(same.probes).toBeGreaterThan(1000);
  });

  it("invalid data on either side: the PolicyError, naming that side's file", async () => {
    const bad = copyOfPolicy('HEAD~1:policy');
    edit(bad.dir, 'clients.yaml', (d) => {
      d.clients[0].rate_limit_tier = 'gold';
    });
    const good = copyOfPolicy('good');
    for (const [base, head] of [
      [bad, good],
      [good, bad],
    ] as const) {
      const error = await diffPolicies(base, head).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PolicyError);
      expect((error as PolicyError).message).toContain('HEAD~1:policy/data/clients.yaml: clients[0].rate_limit_tier: unknown tier "gold"');
    }
  });
});

describe('npm run policy -- diff', () => {
  const policyCli = (...args: string[]) => spawnSync(process.execPath, [join(REPO_ROOT, 'scripts/policy.ts'), ...args], { cwd: REPO_ROOT, encoding: 'utf8' });

  it('against HEAD, whose policy the working tree has: no decision changes, exit 0', () => {
    const r = policyCli('diff', '--base', 'HEAD');
    expect(r.stderr).not.toContain('error');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('no decision changes\n');
  }, 60_000);

  it('--json: base ref, commit and revision, head revision, no changes', () => {
    const r = policyCli('diff', '--json');
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { base: { ref: string; commit: string; revision: string }; head: { revision: string }; changes: unknown[] };
    const head = spawnSync('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
    expect(report).toEqual({
      base: { ref: 'HEAD', commit: head, revision: report.head.revision },
      head: { revision: expect.stringMatching(/^[0-9a-f]{20}$/) },
      changes: [],
    });
  }, 60_000);

  it('a mistyped command line: the usage and exit 2, before any OPA starts', () => {
    for (const [args, message] of [
      [['diff', '--bogus'], "Unknown option '--bogus'"],
      [['diff', '--base'], "Option '--base <value>' argument missing"],
      [['diff', '--base', 'no-such-ref'], '--base no-such-ref: not a commit of this repository'],
      [['diff', '--base', '--json'], "Option '--base' argument is ambiguous"],
      [['diff', 'stray'], "Unexpected argument 'stray'"],
    ] as const) {
      const r = policyCli(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toContain(message);
      expect(r.stderr).toContain('npm run policy -- diff [--base GIT_REF] [--json|--markdown]');
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(r.stdout).toBe('');
    }
  });
});
