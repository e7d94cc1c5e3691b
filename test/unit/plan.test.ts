// The platform plan (components/render/plan.ts): the whole plan of every shipped stack against
// its golden copy (test/golden/plans/<stack>: plan.json and every workload's files), and the
// properties the Platform relies on: no file of the plan depends on the API keys, the network
// names only planned workloads and ports they listen on, and a target is never handed what it
// cannot do.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkAgainstSpec, specIds, parseStackConfig, type StackConfig } from '../../components/config.ts';
import { planFiles, planPlatform, renderPlanBundle } from '../../components/render/plan.ts';
import type { TargetCapabilities } from '../../components/render/types.ts';
import { dockerCapabilities, dockerPrefixOf } from '../../components/targets/docker.ts';
import { kubernetesCapabilities } from '../../components/targets/kubernetes.ts';
import { sha256Hex } from '../../policy/bundle.ts';
import { ROOT, stackFileRawConfig } from '../../scripts/pulumi-env.ts';
import { ephemeralBundleSigner, shippedSpec } from '../../scripts/local/fixtures.ts';
import { goldenDir } from '../support/golden.ts';

const stacks = readdirSync(join(ROOT, 'stacks'))
  .map((f) => /^Pulumi\.(.+)\.yaml$/.exec(f)?.[1])
  .filter((s): s is string => s !== undefined)
  .sort();
const capabilitiesOf = (config: StackConfig, stack: string): TargetCapabilities =>
  config.target === 'docker' ? dockerCapabilities(dockerPrefixOf(stack)) : kubernetesCapabilities(config.kubernetes.namespace);

describe('the plan of each shipped stack', () => {
  it('covers dev, staging and prod', () => {
    expect(stacks).toEqual(['dev', 'prod', 'staging']);
  });

  it.each(stacks)('%s matches its golden plan (test/golden/plans/<stack>)', (stack) => {
    const config = parseStackConfig(stackFileRawConfig(stack), stack);
    const spec = shippedSpec();
    checkAgainstSpec(config, specIds(spec));
    goldenDir(`plans/${stack}`, planFiles(planPlatform(spec, config, capabilitiesOf(config, stack), [])));
  });
});

describe('planPlatform', () => {
  const docker = dockerCapabilities('agentd-test');
  const monitored = parseStackConfig({ 'agentd:target': 'docker', 'agentd:monitoring': JSON.stringify({ enabled: true }) });

  it('plans no file from the API keys: a new client changes the bundle and nothing else', () => {
    const spec = shippedSpec();
    const more = { ...spec, clients: [...spec.clients, { ...spec.clients[0]!, id: 'new-client' }] };
    const before = planPlatform(spec, monitored, docker, ['openai']);
    const after = planPlatform(more, monitored, docker, ['openai']);
    expect(after).toEqual(before);
    const hashes = (s: typeof spec) => Object.fromEntries(s.clients.map((c) => [c.id, sha256Hex(`key-of-${c.id}`)]));
    const signer = ephemeralBundleSigner();
    expect(renderPlanBundle(after, more, hashes(more), signer).policyRevision).not.toBe(renderPlanBundle(before, spec, hashes(spec), signer).policyRevision);
  });

  it('connects only planned workloads, on ports they listen on; monitoring adds its own workloads and connections', () => {
    const plain = planPlatform(shippedSpec(), parseStackConfig({ 'agentd:target': 'docker' }), docker, []);
    const full = planPlatform(shippedSpec(), monitored, docker, []);
    expect(plain.workloads.map((w) => w.name)).toEqual(['opa', 'bundles', 'agentd', 'egress', 'gateway']);
    expect(full.workloads.map((w) => w.name)).toEqual(['opa', 'bundles', 'agentd', 'egress', 'gateway', 'prometheus', 'loki', 'alloy', 'grafana']);
    for (const plan of [plain, full]) {
      const ports = new Map(plan.workloads.map((w) => [w.name, w.ports.map((p) => p.port)]));
      expect(plan.network.length).toBeGreaterThan(0);
      for (const c of plan.network) {
        expect(ports.has(c.from), `${c.from} is planned`).toBe(true);
        expect(ports.get(c.to), `${c.from} -> ${c.to}:${c.port}`).toContain(c.port);
      }
    }
    expect(plain.network.some((c) => c.from === 'prometheus' || c.to === 'loki')).toBe(false);
    expect(full.network.filter((c) => c.from === 'prometheus').map((c) => `${c.to}:${c.port}`)).toEqual([
      'gateway:9902',
      'egress:9902',
      'opa:8282',
      'agentd:9464',
    ]);
  });

  it('publishes Grafana and Prometheus only where the target publishes operator ports, and lets only the log shipper read logs', () => {
    const onDocker = planPlatform(shippedSpec(), monitored, docker, []);
    const onKubernetes = planPlatform(shippedSpec(), { ...monitored, target: 'kubernetes' }, kubernetesCapabilities('agentd'), []);
    const published = (p: typeof onDocker) => p.workloads.filter((w) => w.publish).map((w) => `${w.name}:${w.publish!.hostPort}`);
    expect(published(onDocker)).toEqual(['gateway:8080', 'prometheus:9090', 'grafana:3000']);
    expect(published(onKubernetes)).toEqual(['gateway:8080']);
    expect(onDocker.workloads.filter((w) => w.readsWorkloadLogs).map((w) => w.name)).toEqual(['alloy']);
  });

  it('refuses to plan an existing Secret for a target that cannot mount one, naming the fix', () => {
    const k8s = parseStackConfig({ 'agentd:target': 'kubernetes', 'agentd:gateway': JSON.stringify({ tls: { secretName: 'agentd-gateway-tls' } }) });
    expect(planPlatform(shippedSpec(), k8s, kubernetesCapabilities('agentd'), []).workloads.find((w) => w.name === 'gateway')!.externalSecrets).toEqual([
      { secretName: 'agentd-gateway-tls', mountPath: '/run/secrets/agentd-tls' },
    ]);
    expect(() => planPlatform(shippedSpec(), k8s, docker, [])).toThrow(/cannot mount existing secrets \(gateway: agentd-gateway-tls\).*secret stack config/);
  });

  it('names secrets by reference only: no secret value can be in a plan', () => {
    const plan = planPlatform(shippedSpec(), monitored, docker, ['openai', 'github']);
    const refs = plan.workloads.flatMap((w) => [...Object.values(w.secretFiles), ...Object.values(w.live?.secretFiles ?? {})]);
    expect(refs).toContainEqual({ credential: 'openai' });
    expect(refs).toContainEqual({ generated: 'grafana-admin-password' });
    for (const ref of refs) expect(Object.values(ref).every((v) => typeof v === 'string' && v.length < 40)).toBe(true);
  });
});
