// The Kubernetes target: a namespace; per workload a ConfigMap and a Secret (mounted as files),
// a Deployment whose pod template carries the content hash (a change rolls exactly the
// Deployments whose files changed), a Service, a PodDisruptionBudget when replicas > 1; and
// NetworkPolicies: default deny, only the gateway takes traffic from outside, each workload
// reaches only the workloads it talks to and DNS, only the egress proxy reaches the internet.

import * as k8s from '@pulumi/kubernetes';
import * as pulumi from '@pulumi/pulumi';
import type { EgressPeer, Exposure } from '../config.ts';
import type { Connection, FileContent, TargetCapabilities, WorkloadFiles } from '../render/types.ts';
import type { DeployedWorkload, Placement, Target } from '../target.ts';
import { workloadHash, type Workload } from '../workload.ts';

export interface KubernetesTargetArgs {
  readonly namespace: string;
  /** The provider to use (a cluster's kubeconfig, or renderYamlToDirectory). */
  readonly provider: k8s.Provider;
  /** Service type of the published workload (the gateway); its Service listens on `publish.hostPort`. */
  readonly exposure: Exposure;
  /**
   * Add `pulumi.com/skipAwait` to every object: for API servers without nodes (tests), where a
   * Deployment never becomes ready.
   */
  readonly skipAwait: boolean;
  /** Create Secret objects (off when rendering YAML without opting in to plaintext secrets). */
  readonly createSecrets: boolean;
  /** Private destinations that the workloads reaching the internet (the egress proxy) may reach too. */
  readonly egressPeers?: readonly EgressPeer[];
}

export const HASH_ANNOTATION = 'agentd.dev/content-hash';
export const NAME_LABEL = 'app.kubernetes.io/name';
const PART_OF_LABEL = 'app.kubernetes.io/part-of';

/**
 * Provider options the target relies on. ConfigMaps and Secrets are updated in place (the
 * provider's default replaces them on any change, and with fixed names a replace is delete then
 * create: a moment with no config, and the Deployment referencing it replaced too). The
 * content-hash annotation on the pod template is what rolls the pods.
 */
export function kubernetesProviderArgs(renderYamlTo?: string): k8s.ProviderArgs {
  const mutable = { enableConfigMapMutable: true, enableSecretMutable: true };
  // Rendering needs no cluster. The SDK fills `kubeconfig` from $KUBECONFIG when it is unset,
  // and the provider refuses a kubeconfig together with renderYamlToDirectory: an empty one
  // keeps a user's KUBECONFIG from breaking `pulumi up` of a GitOps stack.
  return renderYamlTo ? { ...mutable, renderYamlToDirectory: renderYamlTo, kubeconfig: '' } : mutable;
}

/** Private ranges and link-local (cloud metadata): never reachable through the internet rule. */
export const NON_INTERNET_CIDRS = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '100.64.0.0/10'];

/** The NetworkPolicy egress rule opening one private destination. Pure. */
export function egressPeerRule(peer: EgressPeer): object {
  const port = [{ port: peer.port, protocol: 'TCP' }];
  if ('cidr' in peer) return { to: [{ ipBlock: { cidr: peer.cidr } }], ports: port };
  return {
    to: [
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': peer.namespace } },
        ...(peer.podLabels ? { podSelector: { matchLabels: peer.podLabels } } : {}),
      },
    ],
    ports: port,
  };
}

/** ConfigMap and Secret keys cannot hold "/": a key per file, mapped back to its path by `items`. */
function fileKey(path: string): string {
  return path.replace(/\//g, '__');
}

/**
 * The directory every path lies in ('' when they do not share one): the config volume is mounted
 * there. The kubelet links each top-level entry of a ConfigMap volume into its `..data` directory,
 * and programs that walk a tree without following links (the rate-limit service's runtime loader)
 * see a linked subdirectory as a file: mounted at the shared directory, only files are links. Pure.
 */
export function commonDirectory(paths: readonly string[]): string {
  const dirs = paths.map((p) => p.split('/').slice(0, -1));
  if (dirs.length === 0) return '';
  const first = dirs[0]!;
  let n = first.length;
  for (const d of dirs) {
    let i = 0;
    while (i < n && i < d.length && d[i] === first[i]) i++;
    n = i;
  }
  return first.slice(0, n).join('/');
}

/** ConfigMap data and binaryData for a set of files. */
function configMapData(files: WorkloadFiles): { data: Record<string, string>; binaryData: Record<string, string> } {
  const data: Record<string, string> = {};
  const binaryData: Record<string, string> = {};
  for (const p of Object.keys(files).sort()) {
    const c: FileContent = files[p]!;
    if (typeof c === 'string') data[fileKey(p)] = c;
    else binaryData[fileKey(p)] = c.base64;
  }
  return { data, binaryData };
}

/**
 * Where clients reach a published Service: the load balancer's first ingress address once the
 * cloud assigned one, else the Service's cluster DNS name (ClusterIP and NodePort exposure, or a
 * load balancer still pending).
 */
export function publishedEndpoint(
  namespace: string,
  service: string,
  port: number,
  ingress: ReadonlyArray<{ ip?: string; hostname?: string }> | undefined,
): string {
  const first = ingress?.find((i) => i.hostname || i.ip);
  const host = first ? (first.hostname || first.ip)! : kubernetesAddress(namespace)(service, port).host;
  return `${host}:${port}`;
}

/** The Service that takes a published workload's traffic from outside the cluster (NodePort, LoadBalancer). */
const publicServiceName = (workload: string) => `${workload}-public`;

export const kubernetesAddress = (namespace: string) => (workload: string, port: number) => ({
  host: `${workload}.${namespace}.svc.cluster.local`,
  port,
});

/** What the plan needs to know about the Kubernetes target in `namespace`. Pure. */
export function kubernetesCapabilities(namespace: string): TargetCapabilities {
  return {
    address: kubernetesAddress(namespace),
    logDiscovery: { kind: 'kubernetes', namespace, serviceLabel: NAME_LABEL },
    // Only the gateway takes traffic from outside: operators reach Grafana with kubectl port-forward.
    publishesOperatorPorts: false,
    mountsExternalSecrets: true,
  };
}

/** Every container: no privilege, read-only root, non-root, no capability. */
const CONTAINER_SECURITY = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } };

/** What the log shipper may read: the namespace's pods and their logs. */
const LOG_READER_RULES = [{ apiGroups: [''], resources: ['pods', 'pods/log', 'namespaces'], verbs: ['get', 'list', 'watch'] }];

export class KubernetesTarget extends pulumi.ComponentResource implements Target {
  readonly capabilities: TargetCapabilities;
  readonly namespace: k8s.core.v1.Namespace;
  private readonly args: KubernetesTargetArgs;
  private readonly opts: pulumi.CustomResourceOptions;
  private readonly name: string;

  constructor(name: string, args: KubernetesTargetArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:targets:KubernetesTarget', name, {}, opts);
    this.args = args;
    this.name = name;
    this.capabilities = kubernetesCapabilities(args.namespace);
    this.opts = { provider: args.provider };
    this.namespace = new k8s.core.v1.Namespace(
      `${name}-namespace`,
      {
        metadata: {
          name: args.namespace,
          labels: { [PART_OF_LABEL]: 'agentd', 'pod-security.kubernetes.io/enforce': 'restricted' },
          annotations: this.annotations(),
        },
      },
      { parent: this, ...this.opts },
    );
    // Default deny, both directions, for every pod of the namespace.
    new k8s.networking.v1.NetworkPolicy(
      `${name}-default-deny`,
      {
        metadata: { name: 'default-deny', namespace: args.namespace, annotations: this.annotations() },
        spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
      },
      { parent: this, dependsOn: [this.namespace], ...this.opts },
    );
    this.registerOutputs({ namespace: this.namespace.metadata.name });
  }

  /**
   * The annotations of an object, or none: an empty map is dropped by the API server, and a
   * Secret that asked for one then differed in every preview (seen on the test node, where
   * nothing skips await).
   */
  private annotations(extra: Record<string, pulumi.Input<string>> = {}): Record<string, pulumi.Input<string>> | undefined {
    const all = { ...(this.args.skipAwait ? { 'pulumi.com/skipAwait': 'true' } : {}), ...extra };
    return Object.keys(all).length > 0 ? all : undefined;
  }

  deploy(workloads: readonly Workload[], network: readonly Connection[], place: (workload: string) => Placement): Readonly<Record<string, DeployedWorkload>> {
    const deployed = Object.fromEntries(workloads.map((w) => [w.name, this.deployWorkload(w, place(w.name))]));
    this.networkPolicies(workloads, network);
    return deployed;
  }

  /** The ConfigMap, Secret, volume claim, account, Deployment, Services and disruption budget of one workload. */
  private deployWorkload(w: Workload, { parent, baseName }: Placement): DeployedWorkload {
    const ns = this.args.namespace;
    const labels = { [NAME_LABEL]: w.name, [PART_OF_LABEL]: 'agentd' };
    const after = [this.namespace];
    const child = { parent, dependsOn: after, ...this.opts };
    const hash = workloadHash(w);

    const files = pulumi.output(w.files);
    const config = new k8s.core.v1.ConfigMap(
      `${baseName}-config`,
      {
        metadata: { name: `${w.name}-config`, namespace: ns, labels, annotations: this.annotations() },
        data: files.apply((f) => configMapData(f as WorkloadFiles).data),
        binaryData: files.apply((f) => configMapData(f as WorkloadFiles).binaryData),
      },
      child,
    );
    const configSubdir = files.apply((f) => commonDirectory(Object.keys(f)));
    const configItems = files.apply((f) => {
      const sub = commonDirectory(Object.keys(f));
      return Object.keys(f)
        .sort()
        .map((p) => ({ key: fileKey(p), path: sub ? p.slice(sub.length + 1) : p }));
    });

    const secretNames = Object.keys(w.secretFiles).sort();
    const secretName = `${w.name}-secrets`;
    // The Deployment names its ConfigMap and Secret literally (a known value in every preview)
    // and depends on them explicitly.
    const mounted: pulumi.Resource[] = [config];
    if (secretNames.length > 0 && this.args.createSecrets) {
      const secret = new k8s.core.v1.Secret(
        `${baseName}-secrets`,
        {
          metadata: { name: secretName, namespace: ns, labels, annotations: this.annotations() },
          type: 'Opaque',
          stringData: Object.fromEntries(secretNames.map((n) => [fileKey(n), w.secretFiles[n]!])),
        },
        child,
      );
      mounted.push(secret);
    }
    // Live files: a ConfigMap and a Secret of their own, updated in place and left out of the
    // pod template's hash, so a change reaches the running pods (the kubelet swaps the volume's
    // `..data`, which Envoy watches) without rolling them.
    const live = w.live;
    // No `items` for an empty set (the API server drops an empty list, and every preview would differ).
    const liveItems = (names: readonly string[]) => (names.length > 0 ? { items: names.map((p) => ({ key: fileKey(p), path: p })) } : {});
    if (live) {
      mounted.push(
        new k8s.core.v1.ConfigMap(
          `${baseName}-live`,
          {
            metadata: { name: `${w.name}-live`, namespace: ns, labels, annotations: this.annotations() },
            data: configMapData(live.files).data,
            binaryData: configMapData(live.files).binaryData,
          },
          child,
        ),
      );
      if (this.args.createSecrets) {
        mounted.push(
          new k8s.core.v1.Secret(
            `${baseName}-live-secrets`,
            {
              metadata: { name: `${w.name}-live-secrets`, namespace: ns, labels, annotations: this.annotations() },
              type: 'Opaque',
              // Always there (the pods mount it), empty until a secret is set; an empty stringData would differ in every preview.
              ...(Object.keys(live.secretFiles).length > 0
                ? { stringData: Object.fromEntries(Object.keys(live.secretFiles).map((n) => [fileKey(n), live.secretFiles[n]!])) }
                : {}),
            },
            child,
          ),
        );
      }
    }
    const claim = w.dataVolume
      ? new k8s.core.v1.PersistentVolumeClaim(
          `${baseName}-data`,
          {
            // Not awaited: with a WaitForFirstConsumer class (most clouds' defaults, and the test
            // node's) a claim binds only once the pod that mounts it is scheduled, and the pod's
            // Deployment waits for the claim.
            metadata: { name: `${w.name}-data`, namespace: ns, labels, annotations: this.annotations({ 'pulumi.com/skipAwait': 'true' }) },
            spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
          },
          child,
        )
      : undefined;
    if (claim) mounted.push(claim);

    if (w.readsWorkloadLogs) {
      new k8s.core.v1.ServiceAccount(`${baseName}-account`, { metadata: { name: w.name, namespace: ns, labels, annotations: this.annotations() } }, child);
      const role = new k8s.rbac.v1.Role(
        `${baseName}-role`,
        {
          metadata: { name: w.name, namespace: ns, labels, annotations: this.annotations() },
          rules: LOG_READER_RULES,
        },
        child,
      );
      new k8s.rbac.v1.RoleBinding(
        `${baseName}-binding`,
        {
          metadata: { name: w.name, namespace: ns, labels, annotations: this.annotations() },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name },
          subjects: [{ kind: 'ServiceAccount', name: w.name, namespace: ns }],
        },
        child,
      );
    }
    const [cmd, ...args] = w.command;
    const deployment = new k8s.apps.v1.Deployment(
      `${baseName}`,
      {
        metadata: { name: w.name, namespace: ns, labels, annotations: this.annotations() },
        spec: {
          replicas: w.replicas,
          // One writer for agentd's SQLite volume: never two pods at once.
          strategy: w.dataVolume ? { type: 'Recreate' } : { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
          selector: { matchLabels: { [NAME_LABEL]: w.name } },
          template: {
            metadata: { labels, annotations: { [HASH_ANNOTATION]: hash } },
            spec: {
              automountServiceAccountToken: w.readsWorkloadLogs === true,
              ...(w.readsWorkloadLogs ? { serviceAccountName: w.name } : {}),
              enableServiceLinks: false,
              // The drain, then the default 30 s for the process to finish what it has.
              terminationGracePeriodSeconds: (w.drainSeconds ?? 0) + 30,
              securityContext: { runAsNonRoot: true, runAsUser: w.user, runAsGroup: w.user, fsGroup: w.user, seccompProfile: { type: 'RuntimeDefault' } },
              // A new pod's NetworkPolicies may take a moment: wait for the peer the process cannot start without.
              ...(w.waitCommand
                ? {
                    initContainers: [
                      {
                        name: `wait-for-${w.startsAfter!.host.split('.')[0]}`,
                        image: w.image,
                        command: [...w.waitCommand],
                        resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '100m', memory: '32Mi' } },
                        securityContext: CONTAINER_SECURITY,
                      },
                    ],
                  }
                : {}),
              containers: [
                {
                  name: w.name,
                  image: w.image,
                  command: [cmd!],
                  args,
                  env: Object.entries(w.env).map(([name, value]) => ({ name, value })),
                  ports: w.ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: 'TCP' })),
                  readinessProbe: { ...probeOf(w.health), periodSeconds: 5, failureThreshold: 3 },
                  // Keeps serving while the endpoints drop the pod, then stops (no shell needed).
                  ...(w.drainSeconds ? { lifecycle: { preStop: { sleep: { seconds: w.drainSeconds } } } } : {}),
                  livenessProbe: { ...probeOf(w.liveness ?? w.health), periodSeconds: 10, failureThreshold: 6, initialDelaySeconds: 10 },
                  resources: {
                    requests: { cpu: `${Math.round(w.resources.cpuMillis / 4)}m`, memory: `${Math.round(w.resources.memoryMiB / 2)}Mi` },
                    limits: { cpu: `${w.resources.cpuMillis}m`, memory: `${w.resources.memoryMiB}Mi` },
                  },
                  securityContext: CONTAINER_SECURITY,
                  volumeMounts: [
                    { name: 'config', mountPath: configSubdir.apply((sub) => (sub ? `${w.configDir}/${sub}` : w.configDir)), readOnly: true },
                    ...(secretNames.length > 0 ? [{ name: 'secrets', mountPath: w.secretDir, readOnly: true }] : []),
                    ...(w.externalSecrets ?? []).map((m, i) => ({ name: `mounted-secret-${i}`, mountPath: m.mountPath, readOnly: true })),
                    ...(live
                      ? [
                          { name: 'live', mountPath: live.dir, readOnly: true },
                          { name: 'live-secrets', mountPath: live.secretDir, readOnly: true },
                        ]
                      : []),
                    ...(w.dataVolume ? [{ name: 'data', mountPath: w.dataVolume.mountPath }] : []),
                    { name: 'tmp', mountPath: '/tmp' },
                  ],
                },
              ],
              volumes: [
                { name: 'config', configMap: { name: `${w.name}-config`, items: configItems } },
                ...(secretNames.length > 0 ? [{ name: 'secrets', secret: { secretName, items: secretNames.map((n) => ({ key: fileKey(n), path: n })) } }] : []),
                ...(w.externalSecrets ?? []).map((m, i) => ({ name: `mounted-secret-${i}`, secret: { secretName: m.secretName } })),
                ...(live
                  ? [
                      { name: 'live', configMap: { name: `${w.name}-live`, ...liveItems(Object.keys(live.files).sort()) } },
                      { name: 'live-secrets', secret: { secretName: `${w.name}-live-secrets`, ...liveItems(Object.keys(live.secretFiles).sort()) } },
                    ]
                  : []),
                ...(claim ? [{ name: 'data', persistentVolumeClaim: { claimName: `${w.name}-data` } }] : []),
                { name: 'tmp', emptyDir: { medium: 'Memory', sizeLimit: '64Mi' } },
              ],
            },
          },
        },
      },
      { ...child, dependsOn: [...after, ...mounted] },
    );

    // Inside the cluster: every port, on a ClusterIP Service named after the workload (the
    // published port at its published number). Outside it (NodePort, LoadBalancer): a second
    // Service with the published port alone, so no other port (stats, admin) leaves the cluster.
    const servicePorts = (only?: number) =>
      w.ports
        .filter((p) => only === undefined || p.port === only)
        .map((p) => ({
          name: p.name,
          port: p.port === w.publish?.port ? w.publish.hostPort : p.port,
          targetPort: p.port,
          appProtocol: p.protocol === 'http2' ? 'kubernetes.io/h2c' : p.protocol,
        }));
    // Not awaited: Pulumi would wait for ready endpoints, which the Deployment's own await already
    // covers; and a Service awaited before its Deployment exists holds one of the engine's
    // parallel operations, so that on a real node `pulumi up` stalled with the bundle server and
    // agentd not yet created while OPA waited for its bundle.
    const service = new k8s.core.v1.Service(
      `${baseName}-service`,
      {
        metadata: { name: w.name, namespace: ns, labels, annotations: this.annotations({ 'pulumi.com/skipAwait': 'true' }) },
        spec: { type: 'ClusterIP', selector: { [NAME_LABEL]: w.name }, ports: servicePorts() },
      },
      child,
    );
    const external = w.publish !== undefined && this.args.exposure !== 'ClusterIP';
    const publicService = external
      ? new k8s.core.v1.Service(
          `${baseName}-public-service`,
          {
            metadata: { name: publicServiceName(w.name), namespace: ns, labels, annotations: this.annotations() },
            spec: { type: this.args.exposure, selector: { [NAME_LABEL]: w.name }, ports: servicePorts(w.publish!.port) },
          },
          child,
        )
      : service;

    if (w.replicas > 1) {
      new k8s.policy.v1.PodDisruptionBudget(
        `${baseName}-pdb`,
        {
          metadata: { name: w.name, namespace: ns, labels, annotations: this.annotations() },
          spec: { minAvailable: 1, selector: { matchLabels: { [NAME_LABEL]: w.name } } },
        },
        child,
      );
    }
    if (!w.publish) return { resource: deployment, hash };
    const port = w.publish.hostPort;
    const servicePort = (ports: ReadonlyArray<{ port: number; nodePort?: number }> | undefined) => ports?.find((p) => p.port === port)?.nodePort ?? 0;
    return {
      resource: deployment,
      hash,
      endpoint: publicService.status.apply((st) => publishedEndpoint(ns, w.name, port, st?.loadBalancer?.ingress)),
      ...(this.args.exposure === 'NodePort' ? { nodePort: publicService.spec.apply((sp) => servicePort(sp.ports)) } : {}),
    };
  }

  /**
   * The NetworkPolicies: ingress to a workload only from the workloads that connect to it, on
   * the ports they connect to (and from anywhere to the published port), egress only to the
   * workloads it connects to, DNS, and for `internet` workloads, public addresses.
   */
  private networkPolicies(workloads: readonly Workload[], network: readonly Connection[]): void {
    const ns = this.args.namespace;
    for (const w of workloads) {
      // One ingress rule per caller, opening exactly the ports that caller connects to.
      const callers = workloads
        .map((c) => ({
          caller: c.name,
          ports: [...new Set(network.filter((n) => n.from === c.name && n.to === w.name).map((n) => n.port))].sort((a, b) => a - b),
        }))
        .filter((c) => c.ports.length > 0);
      const ingress = [
        ...callers.map((c) => ({
          from: [{ podSelector: { matchLabels: { [NAME_LABEL]: c.caller } } }],
          ports: c.ports.map((port) => ({ port, protocol: 'TCP' })),
        })),
        ...(w.publish ? [{ ports: [{ port: w.publish.port, protocol: 'TCP' }] }] : []),
      ];
      const egress = [
        ...network
          .filter((c) => c.from === w.name)
          .map((c) => ({
            to: [{ podSelector: { matchLabels: { [NAME_LABEL]: c.to } } }],
            ports: [{ port: c.port, protocol: 'TCP' }],
          })),
        {
          to: [{ namespaceSelector: {}, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }],
          ports: [
            { port: 53, protocol: 'UDP' },
            { port: 53, protocol: 'TCP' },
          ],
        },
        ...(w.internet
          ? [
              {
                to: [{ ipBlock: { cidr: '0.0.0.0/0', except: NON_INTERNET_CIDRS } }],
                ports: [
                  { port: 443, protocol: 'TCP' },
                  { port: 80, protocol: 'TCP' },
                ],
              },
              ...(this.args.egressPeers ?? []).map(egressPeerRule),
            ]
          : []),
      ];
      new k8s.networking.v1.NetworkPolicy(
        `${this.name}-${w.name}-network`,
        {
          metadata: { name: `${w.name}`, namespace: ns, labels: { [NAME_LABEL]: w.name, [PART_OF_LABEL]: 'agentd' }, annotations: this.annotations() },
          spec: { podSelector: { matchLabels: { [NAME_LABEL]: w.name } }, policyTypes: ['Ingress', 'Egress'], ingress, egress },
        },
        { parent: this, dependsOn: [this.namespace], ...this.opts },
      );
    }
  }
}

/** A workload's health as a Kubernetes probe: an HTTP GET, or a TCP connect when it has no HTTP endpoint (Redis). */
function probeOf(h: { readonly port: number; readonly path?: string }): object {
  return h.path === undefined ? { tcpSocket: { port: h.port } } : { httpGet: { path: h.path, port: h.port } };
}
