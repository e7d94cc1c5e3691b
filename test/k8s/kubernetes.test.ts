// The Kubernetes target for real: `pulumi up` against a local kube-apiserver with etcd (built
// from Go modules; no nodes, so pods never run and resources skip await). Every object is
// created and listed by kubectl; a preview right after is empty; a policy change updates only
// the bundle server's ConfigMap and Deployment (OPA takes the new bundle from it unrestarted);
// destroy leaves nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyProject, type ProjectCopy } from '../../scripts/local/project.ts';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

const STACK = 'k8s';
const NS = 'agentd-k8s-test';
let kubeDir: string;
let kubeconfig: string;
let project: ProjectCopy;

const kubectl = (...args: string[]) => execFileSync('kubectl', ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const kubeJson = (...args: string[]) => JSON.parse(kubectl(...args, '-o', 'json')) as { items: any[] };
const names = (kind: string) =>
  kubeJson('get', kind, '-n', NS)
    .items.map((i) => i.metadata.name)
    .sort();
const templateHashes = () =>
  Object.fromEntries(
    kubeJson('get', 'deployments', '-n', NS).items.map((d) => [d.metadata.name, d.spec.template.metadata.annotations['agentd.dev/content-hash']]),
  );
const configMapVersions = () => Object.fromEntries(kubeJson('get', 'configmaps', '-n', NS).items.map((c) => [c.metadata.name, c.metadata.resourceVersion]));
/** What a destroy left in a namespace (the API server's own kube-root-ca.crt aside). */
const objectsLeft = (ns: string) =>
  kubectl('get', 'deployments,services,configmaps,secrets,networkpolicies,pdb,pvc', '-n', ns, '-o', 'name')
    .split('\n')
    .filter((l) => l && !l.includes('kube-root-ca.crt'));

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
  // Two gateway replicas share their limits: the rate-limit service and Redis deploy too.
  project.set('agentd:rateLimits.mode', 'global');
  project.set('agentd:gateway.exposure', 'NodePort');
  // TLS terminated in front of the node port in this setup: said on purpose.
  project.set('agentd:gateway.allowPlaintext', 'true');
  project.set('agentd:monitoring.enabled', 'true');
  project.set('egress:openai-api-key', 'sk-k8s-test-credential', true);
}, 600_000);

afterAll(() => {
  if (project) project.pulumi(['destroy', '--yes', '--skip-preview'], { check: false });
  if (kubeDir) spawnSync('bash', [join(REPO_ROOT, 'scripts/kube-local.sh'), 'stop', kubeDir]);
}, 600_000);

describe('pulumi up against a real kube-apiserver', () => {
  it('creates every object, and kubectl lists them', () => {
    project.pulumi(['up', '--yes', '--skip-preview']);
    const workloads = ['agentd', 'alloy', 'bundles', 'egress', 'gateway', 'grafana', 'loki', 'opa', 'prometheus', 'ratelimit', 'redis'];
    expect(names('deployments')).toEqual(workloads);
    expect(names('services')).toEqual([...workloads, 'gateway-public'].sort());
    expect(names('configmaps')).toEqual(['kube-root-ca.crt', 'egress-live', 'gateway-live', ...workloads.map((w) => `${w}-config`)].sort());
    expect(names('secrets')).toEqual(
      expect.arrayContaining(['agentd-secrets', 'egress-live-secrets', 'egress-secrets', 'gateway-live-secrets', 'grafana-secrets', 'opa-secrets']),
    );
    expect(names('networkpolicies')).toEqual(['default-deny', ...workloads].sort());
    // The gateway's two replicas, and the rate-limit service's two beside them.
    expect(names('poddisruptionbudgets')).toEqual(['gateway', 'ratelimit']);
    expect(names('persistentvolumeclaims')).toEqual(['agentd-data', 'alloy-data', 'grafana-data', 'loki-data', 'prometheus-data']);
    expect(names('roles')).toEqual(['alloy']);
    expect(names('rolebindings')).toEqual(['alloy']);
    const services = kubeJson('get', 'services', '-n', NS).items;
    const gw = services.find((s) => s.metadata.name === 'gateway-public');
    expect(gw.spec.type).toBe('NodePort');
    // Only the gateway's API port is exposed; everything else stays inside the cluster.
    expect(gw.spec.ports.map((p: any) => p.name)).toEqual(['http']);
    for (const s of services.filter((x) => x.metadata.name !== 'gateway-public')) expect(s.spec.type, s.metadata.name).toBe('ClusterIP');
    // The endpoint outputs name what the API server assigned.
    const outputs = JSON.parse(project.pulumi(['stack', 'output', '--json']).stdout);
    expect(outputs.gatewayUrl).toBe(`http://gateway.${NS}.svc.cluster.local:8080`);
    expect(outputs.gatewayNodePort).toBe(gw.spec.ports.find((p: any) => p.name === 'http').nodePort);
    expect(outputs.grafanaUrl).toBe(`http://grafana.${NS}.svc.cluster.local:3000`);
    // Every pod template is hardened as the issue asks (the API server stored what we sent).
    for (const d of kubeJson('get', 'deployments', '-n', NS).items.filter((x) => ['agentd', 'bundles', 'egress', 'gateway', 'opa'].includes(x.metadata.name))) {
      const c = d.spec.template.spec.containers[0];
      expect(c.securityContext, d.metadata.name).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
      });
      expect(d.spec.template.spec.securityContext.seccompProfile.type).toBe('RuntimeDefault');
    }
    // The credential is a live secret: updated in place, outside the pod template's hash.
    const secret = kubeJson('get', 'secrets', '-n', NS).items.find((s) => s.metadata.name === 'egress-live-secrets');
    expect(Buffer.from(secret.data['openai.credential'], 'base64').toString()).toBe('sk-k8s-test-credential');
    // The credential is in the Secret only, never in a ConfigMap.
    expect(kubectl('get', 'configmaps', '-n', NS, '-o', 'json')).not.toContain('sk-k8s-test-credential');
  }, 600_000);

  it('right after: pulumi preview shows no changes', () => {
    project.pulumi(['preview', '--expect-no-changes']);
  }, 300_000);

  it('a policy change updates only the bundle server: its ConfigMap and the checksum on its Deployment (OPA stays)', () => {
    const hashes = templateHashes();
    const versions = configMapVersions();
    const file = join(project.dir, 'policy/data/clients.yaml');
    const before = readFileSync(file, 'utf8');
    const changed = before.replace(
      '    role: operator\n    rate_limit_tier: standard\n',
      '    role: operator\n    rate_limit_tier: standard\n    enabled: false\n',
    );
    expect(changed).not.toBe(before);
    writeFileSync(file, changed);
    // The plan names exactly the bundle server's ConfigMap and Deployment.
    const plan = JSON.parse(project.pulumi(['preview', '--json']).stdout) as { steps: { op: string; urn: string }[] };
    const changes = plan.steps
      .filter((st) => st.op !== 'same')
      .map((st) => `${st.op} ${st.urn.split('::').pop()}`)
      .sort();
    expect(changes).toEqual(['update agentd-bundles', 'update agentd-bundles-config']);
    project.pulumi(['up', '--yes', '--skip-preview']);
    const after = templateHashes();
    const afterVersions = configMapVersions();
    expect(after['bundles']).not.toBe(hashes['bundles']);
    for (const d of ['opa', 'gateway', 'egress', 'agentd']) expect(after[d], d).toBe(hashes[d]);
    expect(afterVersions['bundles-config']).not.toBe(versions['bundles-config']);
    for (const c of ['opa-config', 'gateway-config', 'egress-config', 'agentd-config']) expect(afterVersions[c], c).toBe(versions[c]);
  }, 600_000);

  it('a gateway setting and a rotated credential update only the live ConfigMap and Secret: no pod template changes, nothing rolls', () => {
    const hashes = templateHashes();
    project.set('agentd:gateway.maxRequestBytes', '2048');
    project.set('egress:openai-api-key', 'sk-k8s-test-rotated', true);
    const plan = JSON.parse(project.pulumi(['preview', '--json']).stdout) as { steps: { op: string; urn: string }[] };
    const changes = plan.steps
      .filter((st) => st.op !== 'same')
      .map((st) => `${st.op} ${st.urn.split('::').pop()}`)
      .sort();
    expect(changes).toEqual(['update agentd-egress-live-secrets', 'update agentd-gateway-live']);
    project.pulumi(['up', '--yes', '--skip-preview']);
    expect(templateHashes()).toEqual(hashes);
    const secret = kubeJson('get', 'secrets', '-n', NS).items.find((s) => s.metadata.name === 'egress-live-secrets');
    expect(Buffer.from(secret.data['openai.credential'], 'base64').toString()).toBe('sk-k8s-test-rotated');
    const live = kubeJson('get', 'configmaps', '-n', NS).items.find((c) => c.metadata.name === 'gateway-live');
    expect(live.data['lds.yaml']).toContain('2048');
  }, 600_000);

  it('pulumi destroy leaves nothing', () => {
    project.pulumi(['destroy', '--yes', '--skip-preview']);
    expect(objectsLeft(NS)).toEqual([]);
    // The namespace goes too (the namespace controller empties and removes it).
    const deadline = Date.now() + 60_000;
    let namespaces = '';
    while (Date.now() < deadline) {
      namespaces = kubectl('get', 'namespaces', '-o', 'name');
      if (!namespaces.includes(`namespace/${NS}`)) break;
      execFileSync('sleep', ['1']);
    }
    expect(namespaces).not.toContain(`namespace/${NS}`);
  }, 600_000);
});

// GitOps: the same program renders manifests instead of applying them. Without opting in, no
// Secret (and no credential) is written; what is written is accepted by the real API server.
describe('rendered manifests (agentd:kubernetes.renderYamlTo)', () => {
  const GITOPS_NS = 'agentd-gitops';
  let gitops: ProjectCopy;
  const files = (dir: string): string[] =>
    readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name))
      .sort();

  beforeAll(() => {
    gitops = copyProject('gitops', { KUBECONFIG: '/nonexistent/kubeconfig' });
    gitops.pulumi(['stack', 'init']);
    gitops.set('agentd:target', 'kubernetes');
    gitops.set('agentd:kubernetes.namespace', GITOPS_NS);
    gitops.set('agentd:images.mode', 'upstream');
    gitops.set('egress:openai-api-key', 'sk-gitops-credential', true);
  }, 300_000);

  it('writes no Secret and no credential unless opted in, and the API server accepts every manifest', () => {
    const out = join(gitops.dir, 'rendered');
    gitops.set('agentd:kubernetes.renderYamlTo', out);
    const up = gitops.pulumi(['up', '--yes', '--skip-preview']);
    expect(up.out).toContain('without Secrets');
    const written = files(out);
    const kinds = written.map((f) => readFileSync(f, 'utf8').match(/^kind: (\w+)$/m)?.[1]).sort();
    expect(kinds.filter((k) => k === 'Deployment')).toHaveLength(5);
    expect(kinds).not.toContain('Secret');
    const encoded = Buffer.from('sk-gitops-credential').toString('base64');
    for (const f of written) {
      expect(readFileSync(f, 'utf8'), f).not.toContain('sk-gitops-credential');
      expect(readFileSync(f, 'utf8'), f).not.toContain(encoded);
    }

    // Strict check against the Kubernetes types: the real API server stores each object (the
    // Secrets are created out of band, as the README tells GitOps users to).
    kubectl('create', 'namespace', GITOPS_NS);
    kubectl('apply', '--server-side', '--field-manager', 'gitops-test', '-R', '-f', out);
    const deployments = kubeJson('get', 'deployments', '-n', GITOPS_NS)
      .items.map((d) => d.metadata.name)
      .sort();
    expect(deployments).toEqual(['agentd', 'bundles', 'egress', 'gateway', 'opa']);
    kubectl('delete', 'namespace', GITOPS_NS, '--wait=false');
  }, 300_000);

  it('writes the Secrets, with the credential, when opted in', () => {
    const out = join(gitops.dir, 'rendered-with-secrets');
    gitops.set('agentd:kubernetes.renderYamlTo', out);
    gitops.set('agentd:kubernetes.renderSecrets', 'true');
    gitops.pulumi(['up', '--yes', '--skip-preview']);
    const secrets = files(out).filter((f) => /^kind: Secret$/m.test(readFileSync(f, 'utf8')));
    // agentd (token key, gateway and registry tokens), egress (token key), OPA (its registry
    // token), and the live ones: egress (credentials) and gateway (its token to agentd).
    expect(secrets.length).toBe(5);
    expect(secrets.map((f) => readFileSync(f, 'utf8')).join('\n')).toContain(Buffer.from('sk-gitops-credential').toString('base64'));
  }, 300_000);
});

// The worked examples: stacks/Pulumi.staging.yaml and stacks/Pulumi.prod.yaml as shipped (plus
// skipAwait, since this API server has no nodes), applied for real. Their differences come from
// stack config only.
describe.each([
  { stack: 'staging', ns: 'agentd-staging', exposure: 'ClusterIP', port: 8080, replicas: { gateway: 1, egress: 1 }, pdbs: [] as string[] },
  { stack: 'prod', ns: 'agentd-prod', exposure: 'LoadBalancer', port: 443, replicas: { gateway: 3, egress: 2 }, pdbs: ['egress', 'gateway', 'ratelimit'] },
])('the $stack stack as shipped', ({ stack, ns, exposure, port, replicas, pdbs }) => {
  let copy: ProjectCopy;
  beforeAll(() => {
    copy = copyProject(stack, { KUBECONFIG: kubeconfig });
    cpSync(join(REPO_ROOT, `stacks/Pulumi.${stack}.yaml`), join(copy.dir, `stacks/Pulumi.${stack}.yaml`));
    copy.pulumi(['stack', 'init']);
    copy.set('agentd:kubernetes.skipAwait', 'true');
  }, 300_000);
  afterAll(() => {
    if (copy) copy.pulumi(['destroy', '--yes', '--skip-preview'], { check: false });
  }, 300_000);

  it('deploys with its replicas, exposure and monitoring, and destroys cleanly', () => {
    copy.pulumi(['up', '--yes', '--skip-preview']);
    const deployments = kubeJson('get', 'deployments', '-n', ns).items;
    const replicasOf = (n: string) => deployments.find((d) => d.metadata.name === n)?.spec.replicas;
    expect(replicasOf('gateway')).toBe(replicas.gateway);
    expect(replicasOf('egress')).toBe(replicas.egress);
    expect(deployments.map((d) => d.metadata.name)).toEqual(expect.arrayContaining(['grafana', 'prometheus']));
    const services = kubeJson('get', 'services', '-n', ns).items;
    const gw = services.find((s) => s.metadata.name === (exposure === 'ClusterIP' ? 'gateway' : 'gateway-public'));
    expect(gw.spec.type).toBe(exposure);
    expect(gw.spec.ports).toEqual(
      [expect.objectContaining({ name: 'http', port, targetPort: 8080 })].concat(exposure === 'ClusterIP' ? [expect.objectContaining({ name: 'stats' })] : []),
    );
    // prod serves HTTPS only, from the cert-manager style Secret it names.
    const gwPod = kubeJson('get', 'deployments', '-n', ns).items.find((d) => d.metadata.name === 'gateway').spec.template.spec;
    expect(gwPod.volumes.some((v: any) => v.secret?.secretName === 'agentd-gateway-tls')).toBe(stack === 'prod');
    expect(
      kubeJson('get', 'poddisruptionbudgets', '-n', ns)
        .items.map((p) => p.metadata.name)
        .sort(),
    ).toEqual(pdbs);
    copy.pulumi(['preview', '--expect-no-changes']);
    copy.pulumi(['destroy', '--yes', '--skip-preview']);
    expect(objectsLeft(ns)).toEqual([]);
  }, 300_000);
});
