// The Monitoring component on both targets (Pulumi mocks): the four workloads, their wiring to
// the platform, the generated admin password kept secret, URLs as outputs.
import { describe, expect, it } from 'vitest';
import * as k8s from '@pulumi/kubernetes';
import * as pulumi from '@pulumi/pulumi';
import { parseStackConfig } from '../../components/config.ts';
import { Platform } from '../../components/platform.ts';
import { DockerTarget } from '../../components/targets/docker.ts';
import { KubernetesTarget } from '../../components/targets/kubernetes.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { installMocks, isSecret, testImages, unwrap, value } from './mocks.ts';

const created = installMocks();
const settle = () => new Promise((r) => setTimeout(r, 100));

describe('monitoring on the Docker target', () => {
  it('adds Prometheus, Loki, Alloy and Grafana; publishes Grafana and Prometheus on loopback only', async () => {
    created.length = 0;
    const config = parseStackConfig({ 'agentd:target': 'docker', 'agentd:monitoring': JSON.stringify({ enabled: true }) });
    const target = new DockerTarget('docker', { prefix: 'agentd-mon', bindAddress: '127.0.0.1', extraEdgeNetworks: [], liveWriterImage: 'local/agentd:1' });
    const p = new Platform('agentd', { spec: shippedSpec(), config, images: testImages, target, credentials: {} });
    expect(await value(p.monitoring!.grafanaUrl)).toBe('http://127.0.0.1:3000');
    expect(await value(p.monitoring!.prometheusUrl)).toBe('http://127.0.0.1:9090');
    expect(await isSecret(p.monitoring!.grafanaAdminPassword)).toBe(true);
    await settle();
    const workloads = created.filter(
      (c) => c.type === 'docker:index/container:Container' && c.inputs.labels.some((l: any) => l.label === 'agentd.role' && l.value === 'workload'),
    );
    expect(workloads.map((c) => c.inputs.name).sort()).toEqual([
      'agentd-mon-agentd',
      'agentd-mon-alloy',
      'agentd-mon-bundles',
      'agentd-mon-egress',
      'agentd-mon-gateway',
      'agentd-mon-grafana',
      'agentd-mon-loki',
      'agentd-mon-opa',
      'agentd-mon-prometheus',
    ]);
    const published = workloads.filter((c) => c.inputs.ports.length > 0).map((c) => [c.inputs.name, c.inputs.ports[0].ip]);
    expect(published.sort()).toEqual([
      ['agentd-mon-gateway', '127.0.0.1'],
      ['agentd-mon-grafana', '127.0.0.1'],
      ['agentd-mon-prometheus', '127.0.0.1'],
    ]);
    const alloy = workloads.find((c) => c.inputs.name === 'agentd-mon-alloy')!;
    expect(alloy.inputs.mounts).toContainEqual({ type: 'bind', source: '/var/run/docker.sock', target: '/var/run/docker.sock', readOnly: true });
    // The admin password reaches Grafana only as a secret file.
    const seeds = created.filter((c) => c.type === 'docker:index/container:Container' && c.inputs.labels.some((l: any) => l.value === 'files'));
    const grafanaSeed = seeds.find((c) => c.inputs.labels.some((l: any) => l.label === 'agentd.workload' && l.value === 'grafana'))!;
    const files = unwrap(grafanaSeed.inputs.uploads)
      .map(unwrap)
      .map((u: any) => u.file);
    expect(files).toContain('/run/secrets/grafana/admin-password');
    const ini = unwrap(grafanaSeed.inputs.uploads)
      .map(unwrap)
      .find((u: any) => u.file.endsWith('grafana.ini'));
    expect(ini.content).toMatch(/admin_password = \$__file\{/);
  });
});

describe('monitoring on the Kubernetes target', () => {
  it('gives Alloy read access to pods through a Role, and lets Prometheus reach every scrape target', async () => {
    created.length = 0;
    const config = parseStackConfig({
      'agentd:target': 'kubernetes',
      'agentd:monitoring': JSON.stringify({ enabled: true }),
      'agentd:gateway': JSON.stringify({ exposure: 'LoadBalancer', port: 443, allowPlaintext: true }),
    });
    const target = new KubernetesTarget('kubernetes', {
      namespace: 'agentd',
      provider: new k8s.Provider('k8s', {}),
      exposure: config.gateway.exposure,
      skipAwait: true,
      createSecrets: true,
    });
    const p = new Platform('agentd', { spec: shippedSpec(), config, images: testImages, target, credentials: { openai: pulumi.secret('x') } });
    expect(await value(p.monitoring!.grafanaUrl)).toBe('http://grafana.agentd.svc.cluster.local:3000');
    await settle();
    const role = created.find((c) => c.type === 'kubernetes:rbac.authorization.k8s.io/v1:Role')!;
    expect(role.inputs.rules[0].resources).toEqual(['pods', 'pods/log', 'namespaces']);
    const policies = created.filter((c) => c.type === 'kubernetes:networking.k8s.io/v1:NetworkPolicy');
    const rules = (n: string) => policies.find((x) => x.inputs.metadata.name === n)!.inputs.spec.ingress.filter((r: any) => r.from);
    const callers = (n: string) => rules(n).map((r: any) => r.from[0].podSelector.matchLabels['app.kubernetes.io/name']);
    const portsFor = (n: string, caller: string) =>
      rules(n)
        .find((r: any) => r.from[0].podSelector.matchLabels['app.kubernetes.io/name'] === caller)
        .ports.map((p: any) => p.port);
    // Prometheus reaches each workload's metrics port and nothing else (never agentd's API).
    const metricsPorts = { gateway: [9902], egress: [9902], opa: [8282], agentd: [9464] };
    for (const [w, ports] of Object.entries(metricsPorts)) expect(portsFor(w, 'prometheus'), w).toEqual(ports);
    expect(callers('loki').sort()).toEqual(['alloy', 'grafana']);
    // Only the gateway takes outside traffic: Grafana and Prometheus stay ClusterIP on their own
    // ports (a LoadBalancer gateway on 443 must not turn them into LoadBalancers on 443).
    const services = created.filter((c) => c.type === 'kubernetes:core/v1:Service');
    for (const n of ['grafana', 'prometheus', 'loki']) {
      const svc = services.find((x) => x.inputs.metadata.name === n)!.inputs.spec;
      expect(svc.type, n).toBe('ClusterIP');
      expect(
        svc.ports.every((p: any) => p.port === p.targetPort),
        n,
      ).toBe(true);
    }
    for (const n of ['grafana', 'prometheus'])
      expect(
        policies.find((x) => x.inputs.metadata.name === n)!.inputs.spec.ingress.every((r: any) => r.from),
        n,
      ).toBe(true);
  });
});
