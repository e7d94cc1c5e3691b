// The same Platform on the Kubernetes target, with Pulumi mocks: the same component code gives
// Deployments, ConfigMaps, Secrets, Services, NetworkPolicies and PDBs.
import { beforeAll, describe, expect, it } from 'vitest';
import * as k8s from '@pulumi/kubernetes';
import * as pulumi from '@pulumi/pulumi';
import { parseStackConfig } from '../../components/config.ts';
import { Platform } from '../../components/platform.ts';
import {
  HASH_ANNOTATION,
  KubernetesTarget,
  NON_INTERNET_CIDRS,
  commonDirectory,
  egressPeerRule,
  publishedEndpoint,
} from '../../components/targets/kubernetes.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { installMocks, isSecretValue, testImages, unwrap, value } from './mocks.ts';

const created = installMocks();
const of = (type: string) => created.filter((c) => c.type === type);
const named = (type: string, name: string) => of(type).find((c) => c.inputs.metadata.name === name)!;

function build(configRaw: Record<string, string>, spec = shippedSpec(), createSecrets = true, skipAwait = true) {
  const config = parseStackConfig({ 'agentd:target': 'kubernetes', ...configRaw });
  const provider = new k8s.Provider('k8s', {});
  const target = new KubernetesTarget('kubernetes', {
    namespace: config.kubernetes.namespace,
    provider,
    exposure: config.gateway.exposure,
    skipAwait,
    createSecrets,
  });
  return new Platform('agentd', { spec, config, images: testImages, target, credentials: { openai: pulumi.secret('sk-openai-plaintext') } });
}

let platform: Platform;
beforeAll(async () => {
  platform = build({
    'agentd:gateway': JSON.stringify({ replicas: 2, exposure: 'LoadBalancer', port: 443, tls: { secretName: 'agentd-gateway-tls' } }),
    'agentd:egress': JSON.stringify({ replicas: 3 }),
    'agentd:kubernetes': JSON.stringify({ namespace: 'agentd-prod' }),
    'agentd:rateLimits': JSON.stringify({ mode: 'global' }),
  });
  await value(platform.contentHashes);
  await new Promise((r) => setTimeout(r, 100));
});

describe('Platform on the Kubernetes target', () => {
  it('creates a namespace, and per workload a ConfigMap, a Deployment and a Service', () => {
    expect(of('kubernetes:core/v1:Namespace').map((n) => n.inputs.metadata.name)).toEqual(['agentd-prod']);
    const deployments = of('kubernetes:apps/v1:Deployment')
      .map((d) => d.inputs.metadata.name)
      .sort();
    expect(deployments).toEqual(['agentd', 'bundles', 'egress', 'gateway', 'opa', 'ratelimit', 'redis']);
    expect(
      of('kubernetes:core/v1:ConfigMap')
        .map((c) => c.inputs.metadata.name)
        .sort(),
    ).toEqual([
      'agentd-config',
      'bundles-config',
      'egress-config',
      'egress-live',
      'gateway-config',
      'gateway-live',
      'opa-config',
      'ratelimit-config',
      'redis-config',
    ]);
    expect(
      of('kubernetes:core/v1:Service')
        .map((c) => c.inputs.metadata.name)
        .sort(),
    ).toEqual([...deployments, 'gateway-public'].sort());
    for (const c of created.filter((x) => x.inputs.metadata?.namespace)) expect(c.inputs.metadata.namespace).toBe('agentd-prod');
  });

  it('hardens every pod: non-root, read-only root, drop ALL, seccomp RuntimeDefault, probes and limits', () => {
    for (const d of of('kubernetes:apps/v1:Deployment')) {
      const pod = d.inputs.spec.template.spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: 'RuntimeDefault' } });
      expect(pod.automountServiceAccountToken).toBe(false);
      const c = pod.containers[0];
      expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
      // Redis has no HTTP endpoint: a TCP probe on its port.
      if (d.inputs.metadata.name === 'redis') expect(c.readinessProbe.tcpSocket).toEqual({ port: 6379 });
      else expect(c.readinessProbe.httpGet.path).toMatch(/^\//);
      expect(c.resources.limits.memory).toMatch(/Mi$/);
      expect(c.resources.requests.cpu).toMatch(/m$/);
    }
  });

  it('restarts a pod only for its own process: a liveness probe never waits for a peer (OPA for its bundles, the rate-limit service for Redis)', () => {
    const probes = (n: string) => {
      const c = named('kubernetes:apps/v1:Deployment', n).inputs.spec.template.spec.containers[0];
      return { ready: c.readinessProbe.httpGet?.path ?? 'tcp', live: c.livenessProbe.httpGet?.path ?? 'tcp' };
    };
    expect(probes('opa')).toEqual({ ready: '/health?bundles', live: '/health' });
    expect(probes('ratelimit')).toEqual({ ready: '/healthcheck', live: 'tcp' });
    expect(probes('agentd')).toEqual({ ready: '/ready', live: '/health' });
    expect(probes('gateway')).toEqual({ ready: '/ready', live: '/ready' });
  });

  it('rolls every stateless Deployment with maxUnavailable 0; the proxies drain 5 s (preStop) before they are stopped', () => {
    const deployment = (n: string) => named('kubernetes:apps/v1:Deployment', n).inputs.spec;
    for (const n of ['gateway', 'egress', 'opa', 'bundles']) {
      expect(deployment(n).strategy, n).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
      expect(deployment(n).template.spec.containers[0].readinessProbe.httpGet.path, n).toMatch(/^\/(ready|health\?bundles)$/);
    }
    for (const n of ['gateway', 'egress']) {
      expect(deployment(n).template.spec.containers[0].lifecycle, n).toEqual({ preStop: { sleep: { seconds: 5 } } });
      expect(deployment(n).template.spec.terminationGracePeriodSeconds, n).toBe(35);
    }
    // One writer for agentd's SQLite store: never two pods at once.
    expect(deployment('agentd').strategy).toEqual({ type: 'Recreate' });
    expect(deployment('agentd').template.spec.containers[0].lifecycle).toBeUndefined();
  });

  it('takes replicas from stack config and adds PodDisruptionBudgets for workloads with more than one (the rate-limit service runs two beside replicated proxies)', () => {
    expect(named('kubernetes:apps/v1:Deployment', 'gateway').inputs.spec.replicas).toBe(2);
    expect(named('kubernetes:apps/v1:Deployment', 'egress').inputs.spec.replicas).toBe(3);
    expect(named('kubernetes:apps/v1:Deployment', 'ratelimit').inputs.spec.replicas).toBe(2);
    expect(named('kubernetes:apps/v1:Deployment', 'redis').inputs.spec.replicas).toBe(1);
    expect(named('kubernetes:apps/v1:Deployment', 'agentd').inputs.spec.strategy).toEqual({ type: 'Recreate' });
    expect(
      of('kubernetes:policy/v1:PodDisruptionBudget')
        .map((p) => p.inputs.metadata.name)
        .sort(),
    ).toEqual(['egress', 'gateway', 'ratelimit']);
  });

  it("exposes only the gateway's API port, with the configured Service type and port; every other port stays inside the cluster", () => {
    const pub = named('kubernetes:core/v1:Service', 'gateway-public').inputs.spec;
    expect(pub.type).toBe('LoadBalancer');
    expect(pub.ports).toEqual([{ name: 'http', port: 443, targetPort: 8080, appProtocol: 'http' }]);
    expect(named('kubernetes:core/v1:Service', 'gateway').inputs.spec.ports.map((p: any) => p.name)).toEqual(['http', 'stats']);
    for (const n of ['gateway', 'egress', 'opa', 'agentd']) expect(named('kubernetes:core/v1:Service', n).inputs.spec.type).toBe('ClusterIP');
  });

  it('serves TLS from the named Secret, mounted read-only into the gateway only', () => {
    const pod = named('kubernetes:apps/v1:Deployment', 'gateway').inputs.spec.template.spec;
    expect(pod.volumes.filter((v: any) => v.secret?.secretName === 'agentd-gateway-tls')).toHaveLength(1);
    const vol = pod.volumes.find((v: any) => v.secret?.secretName === 'agentd-gateway-tls');
    expect(pod.containers[0].volumeMounts.find((m: any) => m.name === vol.name)).toEqual({
      name: vol.name,
      mountPath: '/run/secrets/agentd-tls',
      readOnly: true,
    });
    // The SDS file names the mounted Secret's keys (the kubelet swaps them in place when cert-manager renews).
    const cm = JSON.stringify(unwrap(named('kubernetes:core/v1:ConfigMap', 'gateway-live').inputs.data));
    expect(cm).toContain('/run/secrets/agentd-tls/tls.crt');
    for (const n of ['egress', 'opa', 'agentd']) {
      expect(JSON.stringify(named('kubernetes:apps/v1:Deployment', n).inputs.spec.template.spec.volumes)).not.toContain('agentd-gateway-tls');
    }
  });

  it('gives the gateway endpoint as outputs: the load balancer address once assigned, else the cluster DNS name', async () => {
    expect(await value(platform.gatewayUrl)).toBe('https://gateway.agentd-prod.svc.cluster.local:443');
    expect(await value(platform.grpcEndpoint)).toBe('gateway.agentd-prod.svc.cluster.local:443');
    expect(platform.gatewayNodePort).toBeUndefined();
    expect(publishedEndpoint('agentd-prod', 'gateway', 443, [{ ip: '203.0.113.7' }])).toBe('203.0.113.7:443');
    expect(publishedEndpoint('agentd-prod', 'gateway', 443, [{ hostname: 'lb.example.com', ip: '203.0.113.7' }])).toBe('lb.example.com:443');
    expect(publishedEndpoint('agentd-prod', 'gateway', 443, [])).toBe('gateway.agentd-prod.svc.cluster.local:443');
  });

  it('puts the checksum of its files on each pod template', () => {
    for (const d of of('kubernetes:apps/v1:Deployment')) expect(d.inputs.spec.template.metadata.annotations[HASH_ANNOTATION]).toMatch(/^[0-9a-f]{16}$/);
  });

  it('keeps secrets in Secrets only, and marked secret', () => {
    const secrets = of('kubernetes:core/v1:Secret');
    expect(secrets.map((s) => s.inputs.metadata.name).sort()).toEqual([
      'agentd-secrets',
      'egress-live-secrets',
      'egress-secrets',
      'gateway-live-secrets',
      'opa-secrets',
    ]);
    // Credentials are live secrets: updated in place, outside the pod template's hash.
    const egress = named('kubernetes:core/v1:Secret', 'egress-live-secrets');
    expect(isSecretValue(egress.inputs.stringData) || Object.values(egress.inputs.stringData).every(isSecretValue)).toBe(true);
    expect(unwrap(egress.inputs.stringData)['openai.credential']).toBeDefined();
    const configMaps = JSON.stringify(of('kubernetes:core/v1:ConfigMap').map((c) => c.inputs));
    expect(configMaps).not.toContain('sk-openai-plaintext');
  });

  it('denies by default, and lets only the gateway take outside traffic, only agentd reach egress, only the proxies reach OPA, each on the ports it needs', () => {
    const policies = of('kubernetes:networking.k8s.io/v1:NetworkPolicy');
    expect(policies.find((p) => p.inputs.metadata.name === 'default-deny')?.inputs.spec).toEqual({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
    const policy = (n: string) => policies.find((p) => p.inputs.metadata.name === n)!.inputs.spec;
    const callers = (n: string) =>
      policy(n)
        .ingress.filter((r: any) => r.from)
        .map((r: any) => `${r.from[0].podSelector.matchLabels['app.kubernetes.io/name']}:${r.ports.map((p: any) => p.port).join(',')}`);
    expect(callers('opa').sort()).toEqual(['egress:9191', 'gateway:9191']);
    expect(callers('egress')).toEqual(['agentd:8443']);
    // The gateway reaches agentd's API (HTTP, gRPC); OPA only its HTTP port (the sandbox registry).
    expect(callers('agentd').sort()).toEqual(['gateway:8090,9500', 'opa:8090']);
    expect(policy('gateway').ingress.filter((r: any) => !r.from)).toEqual([{ ports: [{ port: 8080, protocol: 'TCP' }] }]);
    expect(policy('gateway').ingress.some((r: any) => !r.from)).toBe(true);
    expect(policy('agentd').ingress.every((r: any) => r.from)).toBe(true);
    const egressTargets = (n: string) =>
      policy(n).egress.flatMap((r: any) =>
        (r.to ?? []).map(
          (t: any) => t.podSelector?.matchLabels?.['app.kubernetes.io/name'] ?? t.podSelector?.matchLabels?.['k8s-app'] ?? (t.ipBlock ? 'internet' : '?'),
        ),
      );
    expect(egressTargets('agentd').sort()).toEqual(['egress', 'kube-dns']);
    expect(egressTargets('egress').sort()).toEqual(['internet', 'kube-dns', 'opa', 'ratelimit']);
    // Global rate limits: both proxies ask the rate-limit service; only it reaches Redis.
    expect(callers('ratelimit').sort()).toEqual(['egress:8081', 'gateway:8081']);
    expect(callers('redis')).toEqual(['ratelimit:6379']);
    expect(egressTargets('ratelimit').sort()).toEqual(['kube-dns', 'redis']);
    expect(egressTargets('redis')).toEqual(['kube-dns']);
    expect(policy('egress').egress.find((r: any) => r.to[0].ipBlock).to[0].ipBlock.except).toEqual(NON_INTERNET_CIDRS);
  });

  it('holds the rate-limit service in an init container until Redis takes connections (it exits without); no other workload waits', () => {
    const spec = (name: string) => of('kubernetes:apps/v1:Deployment').find((d) => d.inputs.metadata.name === name)!.inputs.spec.template.spec;
    const init = spec('ratelimit').initContainers;
    expect(init).toHaveLength(1);
    expect(init[0].name).toBe('wait-for-redis');
    expect(init[0].image).toBe(spec('ratelimit').containers[0].image);
    expect(init[0].command).toEqual(['wait', 'redis.agentd-prod.svc.cluster.local', '6379']);
    expect(init[0].securityContext).toEqual(spec('ratelimit').containers[0].securityContext);
    for (const w of ['agentd', 'bundles', 'egress', 'gateway', 'opa', 'redis']) expect(spec(w).initContainers, w).toBeUndefined();
  });

  it('opens an egress peer by namespace (and labels) or address range, on its port only', () => {
    expect(egressPeerRule({ namespace: 'llm', port: 8443 })).toEqual({
      to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'llm' } } }],
      ports: [{ port: 8443, protocol: 'TCP' }],
    });
    expect(egressPeerRule({ namespace: 'llm', podLabels: { app: 'gw' }, port: 1 })).toEqual({
      to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'llm' } }, podSelector: { matchLabels: { app: 'gw' } } }],
      ports: [{ port: 1, protocol: 'TCP' }],
    });
    expect(egressPeerRule({ cidr: '10.1.0.0/16', port: 443 })).toEqual({ to: [{ ipBlock: { cidr: '10.1.0.0/16' } }], ports: [{ port: 443, protocol: 'TCP' }] });
  });
});

describe('awaiting a cluster with nodes', () => {
  it('awaits the Deployments, not what they make ready: in-cluster Services and volume claims skip await; the load balancer is awaited for its address', async () => {
    created.length = 0;
    const p = build(
      { 'agentd:gateway': JSON.stringify({ exposure: 'LoadBalancer', port: 443, tls: { secretName: 'agentd-gateway-tls' } }) },
      shippedSpec(),
      true,
      false,
    );
    await value(p.contentHashes);
    await new Promise((r) => setTimeout(r, 100));
    const skip = (c: any) => c.inputs.metadata.annotations?.['pulumi.com/skipAwait'];
    const services = of('kubernetes:core/v1:Service').filter((c) => c.inputs.metadata.name !== 'gateway-public');
    expect(services.length).toBeGreaterThan(4);
    for (const svc of services) expect(skip(svc), svc.inputs.metadata.name).toBe('true');
    expect(skip(named('kubernetes:core/v1:Service', 'gateway-public'))).toBeUndefined();
    expect(of('kubernetes:core/v1:PersistentVolumeClaim').map(skip)).toEqual(['true']);
    expect(of('kubernetes:apps/v1:Deployment').map(skip)).toEqual(of('kubernetes:apps/v1:Deployment').map(() => undefined));
    // No empty annotation map: the API server drops it, and the object would differ in every preview.
    const empty = created.filter((c) => c.inputs.metadata?.annotations && Object.keys(c.inputs.metadata.annotations).length === 0);
    expect(empty.map((c) => `${c.type} ${c.inputs.metadata.name}`)).toEqual([]);
  });
});

describe('NodePort exposure', () => {
  it('outputs the node port the cluster assigned', async () => {
    created.length = 0;
    const p = build({ 'agentd:gateway': JSON.stringify({ exposure: 'NodePort', allowPlaintext: true }) });
    await value(p.contentHashes);
    await new Promise((r) => setTimeout(r, 100));
    expect(named('kubernetes:core/v1:Service', 'gateway-public').inputs.spec.type).toBe('NodePort');
    expect(await value(p.gatewayUrl)).toBe('http://gateway.agentd.svc.cluster.local:8080');
    // The mocks echo inputs as state: no node port assigned, so 0. The real API server assigns
    // one (test/k8s checks it against kubectl).
    expect(await value(p.gatewayNodePort!)).toBe(0);
  });
});

describe('rendering manifests without opting in to plaintext secrets', () => {
  it('creates no Secret objects', async () => {
    created.length = 0;
    const p = build({}, shippedSpec(), false);
    await value(p.contentHashes);
    await new Promise((r) => setTimeout(r, 50));
    expect(of('kubernetes:core/v1:Secret')).toEqual([]);
    expect(of('kubernetes:apps/v1:Deployment')).toHaveLength(5);
  });
});

describe('the config volume is mounted where all its files lie', () => {
  it('finds the directory every path shares', () => {
    expect(commonDirectory(['config/gateway.yaml', 'config/egress.yaml'])).toBe('config');
    expect(commonDirectory(['a/b/c.yaml', 'a/b/d/e.yaml'])).toBe('a/b');
    expect(commonDirectory(['envoy.yaml', 'config/x.yaml'])).toBe('');
    expect(commonDirectory(['config/a.yaml'])).toBe('config');
    expect(commonDirectory([])).toBe('');
  });
});
