// The policy pack run by the Pulumi engine, as `npm run preview` and `npm run up` run it
// (--policy-pack policy/pack/run with the config components/policy-pack.ts writes): a stack made
// to break each rule once fails its preview with each rule's message; the same stack done right
// passes. The shipped stacks pass it in every preview of test/checks/workflow and every
// `npm run up` of test/e2e.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POLICY_PACK, policyPackConfig } from '../../components/policy-pack.ts';
import { BUNDLE_DATA_PATH, tarGz } from '../../policy/bundle.ts';
import { RULES } from '../../policy/pack/rules.ts';
import { REPO_ROOT, toolPath } from '../../scripts/local/tools.ts';

/** A preview (or `up` with its preview, as `npm run up` runs it) of the pack-check program, with `good` set or not; its exit status, output and the resources in its state after. */
function preview(good: boolean, command: 'preview' | 'up' = 'preview'): { status: number | null; out: string; resources: number } {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-pack-'));
  cpSync(join(REPO_ROOT, 'test/policy/pack-program'), dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'agentd-pack-check', type: 'module' }));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
  mkdirSync(join(dir, 'state'));
  writeFileSync(join(dir, 'pack-config.json'), JSON.stringify(policyPackConfig({ allowPlaintext: false })));
  const env = { ...process.env, PULUMI_BACKEND_URL: `file://${join(dir, 'state')}`, PULUMI_CONFIG_PASSPHRASE: 'pack-check', PULUMI_SKIP_UPDATE_CHECK: 'true' };
  const pulumi = (...args: string[]) => spawnSync(toolPath('pulumi'), [...args, '--non-interactive'], { cwd: dir, env, encoding: 'utf8', timeout: 300_000 });
  const patterns = good ? [{ source: '/v1/**', segments: ['v1'], prefix: true }] : [{ source: '/**', segments: [], prefix: true }];
  const bundle = tarGz({ [BUNDLE_DATA_PATH]: JSON.stringify({ egress: { services: { openai: { methods: { POST: true }, patterns } } } }) });
  for (const args of [
    ['stack', 'init', 'check'],
    ['config', 'set', 'good', String(good)],
    ['config', 'set', 'renderDir', join(dir, 'rendered')],
    ['config', 'set', 'bundle', bundle.toString('base64')],
  ]) {
    const r = pulumi(...args);
    expect(r.status, `pulumi ${args.join(' ')}: ${r.stderr}`).toBe(0);
  }
  const r = pulumi(
    ...(command === 'up' ? ['up', '--yes'] : ['preview']),
    '--policy-pack',
    join(REPO_ROOT, POLICY_PACK),
    '--policy-pack-config',
    join(dir, 'pack-config.json'),
  );
  const state = pulumi('stack', 'export');
  const resources = ((JSON.parse(state.stdout) as { deployment: { resources?: unknown[] } }).deployment.resources ?? []).length;
  return { status: r.status, out: `${r.stdout}\n${r.stderr}`, resources };
}

describe('the policy pack in pulumi preview', () => {
  it('fails a stack that breaks each mandatory rule, with each rule and its message', () => {
    const { status, out } = preview(false);
    expect(status, out).not.toBe(0);
    expect(out).toContain('❌ agentd-platform@');
    for (const description of Object.values(RULES)) expect(out, description).toContain(description);
    for (const message of [
      'Container opa publishes port 9191 (OPA ext_authz gRPC) of workload opa on the host (127.0.0.1): only nothing of opa may be published',
      'Container agentd (workload) runs as root (user "0:0"): set a non-root uid:gid',
      'Container agentd (workload) has a writable root filesystem: set readOnly true',
      'the gateway is reachable beyond loopback (Container gateway publishes port 18080 on 0.0.0.0) but its listener has no TLS',
      'egress service openai allows every path (/**): list the paths agents need',
      'ConfigMap config data.settings.json holds a secret value in plain text',
      'stack output tokenHint holds a secret value in plain text',
    ])
      expect(out, message).toContain(message);
    expect(out, 'no message shows the secret').not.toMatch(/holds a secret value[^\n]*pack-check-secret/);
  }, 300_000);

  it('stops `pulumi up` (with its preview, as npm run up runs it) before any resource is created', () => {
    const { status, out, resources } = preview(false, 'up');
    expect(status, out).not.toBe(0);
    expect(out).toContain('egress service openai allows every path (/**): list the paths agents need');
    expect(out).toContain('error: preview failed');
    expect(resources, 'nothing created').toBe(0);
  }, 300_000);

  it('passes the same stack done right', () => {
    const { status, out } = preview(true);
    expect(status, out).toBe(0);
    expect(out).toContain('✅ agentd-platform@');
  }, 300_000);
});
