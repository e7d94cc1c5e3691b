// The Kubernetes target for real: `pulumi up` against a local kube-apiserver with etcd (built
// from Go modules; no nodes, so pods never run and resources skip await). Every object is
// created and listed by kubectl; a preview right after is empty; a policy change updates only
// OPA's ConfigMap and Deployment; destroy leaves nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyProject, type ProjectCopy } from '../support/project.ts';
import { REPO_ROOT } from '../support/tools.ts';

const STACK = 'k8s';
const NS = 'agentd-k8s-test';
let kubeDir: string;
let kubeconfig: string;
let project: ProjectCopy;

const kubectl = (...args: string[]) => execFileSync('kubectl', ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const kubeJson = (...args: string[]) => JSON.parse(kubectl(...args, '-o', 'json')) as { items: any[] };
const names = (kind: string) => kubeJson('get', kind, '-n', NS).items.map((i) => i.metadata.name).sort();
const templateHashes = () => Object.fromEntries(kubeJson('get', 'deployments', '-n', NS).items.map((d) => [d.metadata.name, d.spec.template.metadata.annotations['agentd.dev/content-hash']]));
const configMapVersions = () => Object.fromEntries(kubeJson('get', 'configmaps', '-n', NS).items.map((c) => [c.metadata.name, c.metadata.resourceVersion]));

beforeAll(() => {
  kubeDir = mkdtempSync(join(tmpdir(), 'agentd-kube-'));
  const r = spawnSync('bash', [join(REPO_ROOT, 'scripts/kube-local.sh'), 'start', kubeDir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kube-local start failed:\n${r.stdout}\n${r.stderr}`);
  kubeconfig = join(kubeDir, 'kubeconfig');
  project = copyProject(STACK, { KUBECONFIG: kubeconfig });
  project.pulumi(['stack', 'init']);
  project.set('agentd:target', 'kubernetes');
  project.set('agentd:kubernetes.namespace', NS);
  project.set('agentd:kubernetes.skipAwait', 'true');
  project.set('agentd:images.mode', 'upstream');
  project.set('agentd:gateway.replicas', '2');
  project.set('agentd:gateway.exposure', 'NodePort');
  project.set('egress:openai-api-key', 'sk-k8s-test-credential', true);
}, 600_000);

afterAll(() => {
  if (project) project.pulumi(['destroy', '--yes', '--skip-preview'], { check: false });
  if (kubeDir) spawnSync('bash', [join(REPO_ROOT, 'scripts/kube-local.sh'), 'stop', kubeDir]);
}, 600_000);

describe('pulumi up against a real kube-apiserver', () => {
  it('creates every object, and kubectl lists them', () => {
    project.pulumi(['up', '--yes', '--skip-preview']);
    expect(names('deployments')).toEqual(['agentd', 'egress', 'gateway', 'opa']);
    expect(names('services')).toEqual(['agentd', 'egress', 'gateway', 'opa']);
    expect(names('configmaps')).toEqual(expect.arrayContaining(['agentd-config', 'egress-config', 'gateway-config', 'opa-config']));
    expect(names('secrets')).toEqual(expect.arrayContaining(['agentd-secrets', 'egress-secrets']));
    expect(names('networkpolicies')).toEqual(['agentd', 'default-deny', 'egress', 'gateway', 'opa']);
    expect(names('poddisruptionbudgets')).toEqual(['gateway']);
    expect(names('persistentvolumeclaims')).toEqual(['agentd-data']);
    const gw = kubeJson('get', 'services', '-n', NS).items.find((s) => s.metadata.name === 'gateway');
    expect(gw.spec.type).toBe('NodePort');
    const secret = kubeJson('get', 'secrets', '-n', NS).items.find((s) => s.metadata.name === 'egress-secrets');
    expect(Buffer.from(secret.data['credentials__openai.credential'], 'base64').toString()).toBe('sk-k8s-test-credential');
    // The credential is in the Secret only, never in a ConfigMap.
    expect(kubectl('get', 'configmaps', '-n', NS, '-o', 'json')).not.toContain('sk-k8s-test-credential');
  }, 600_000);

  it('right after: pulumi preview shows no changes', () => {
    project.pulumi(['preview', '--expect-no-changes']);
  }, 300_000);

  it('a policy change updates only OPA: its ConfigMap and the checksum on its Deployment', () => {
    const hashes = templateHashes();
    const versions = configMapVersions();
    const file = join(project.dir, 'policy/data/clients.yaml');
    writeFileSync(file, readFileSync(file, 'utf8').replace('    role: operator\n    rate_limit_tier: standard\n', '    role: operator\n    rate_limit_tier: standard\n    enabled: false\n'));
    project.pulumi(['up', '--yes', '--skip-preview']);
    const after = templateHashes();
    const afterVersions = configMapVersions();
    expect(after['opa']).not.toBe(hashes['opa']);
    for (const d of ['gateway', 'egress', 'agentd']) expect(after[d], d).toBe(hashes[d]);
    expect(afterVersions['opa-config']).not.toBe(versions['opa-config']);
    for (const c of ['gateway-config', 'egress-config', 'agentd-config']) expect(afterVersions[c], c).toBe(versions[c]);
  }, 600_000);

  it('pulumi destroy leaves nothing', () => {
    project.pulumi(['destroy', '--yes', '--skip-preview']);
    const left = spawnSync('kubectl', ['--kubeconfig', kubeconfig, 'get', 'deployments,services,configmaps,secrets,networkpolicies,pdb,pvc', '-n', NS, '-o', 'name'], { encoding: 'utf8' });
    expect(left.stdout.split('\n').filter((l) => l && !l.includes('kube-root-ca.crt'))).toEqual([]);
  }, 600_000);
});
