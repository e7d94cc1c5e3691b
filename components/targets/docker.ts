// The Docker target: workloads become containers on networks that say who reaches whom. Each
// workload has an internal network of its own (`<prefix>-to-<workload>`, no route out) that it
// and its callers join, so a container shares a network only with the peers it talks to or is
// called by; `edge` is joined only by workloads that are published (the gateway) or reach the
// internet (the egress proxy). Docker cannot filter ports between containers of one network:
// there, every port but a metrics port authenticates its caller (agentd's API wants the
// gateway's token, its registry OPA's token). Files go into per-workload volumes named after
// their content hash, mounted read-only, so a changed file means a new volume and a new
// container for exactly that workload, and a stale file can never linger.

import * as docker from '@pulumi/docker';
import * as pulumi from '@pulumi/pulumi';
import { liveHash, workloadHash, type Workload } from '../workload.ts';
import { liveInstallProgram } from './live-install.ts';
import type { DeployedWorkload, Placement, Target } from '../target.ts';
import type { Connection, TargetCapabilities, WorkloadFiles } from '../render/types.ts';

export interface DockerTargetArgs {
  /** Prefix of every Docker object's name (one stack, one prefix). */
  readonly prefix: string;
  /** Host address published ports bind to. */
  readonly bindAddress: string;
  /** Existing networks the internet-facing workloads also join. */
  readonly extraEdgeNetworks: readonly string[];
  /**
   * An image with Node.js (the agentd image): it runs the short-lived writer that installs a
   * new revision of a workload's live files into its live volumes (live-install.ts).
   */
  readonly liveWriterImage: pulumi.Input<string>;
}

/** Labels every object carries, so `docker ps --filter label=agentd.stack=<prefix>` finds them. */
const STACK_LABEL = 'agentd.stack';
export const WORKLOAD_LABEL = 'agentd.workload';
export const HASH_LABEL = 'agentd.content-hash';
/** `workload` (the running container) or `files` (the never-started container that fills its volumes). */
export const ROLE_LABEL = 'agentd.role';

/** The hardening every container gets (and the component tests check). */
const HARDENING = {
  readOnly: true,
  capabilities: { drops: ['ALL'] },
  securityOpts: ['no-new-privileges:true'],
  restart: 'unless-stopped',
} as const;

/** Upload entries for a set of files under a directory. */
function uploadsFor(dir: string, files: WorkloadFiles): docker.types.input.ContainerUpload[] {
  return Object.keys(files)
    .sort()
    .map((p) => {
      const content = files[p]!;
      return typeof content === 'string'
        ? { file: `${dir}/${p}`, content, permissions: '0444' }
        : { file: `${dir}/${p}`, contentBase64: content.base64, permissions: '0444' };
    });
}

/** The internal network a workload and its callers share. */
const dockerNetworkTo = (prefix: string, workload: string) => `${prefix}-to-${workload}`;

/** How workloads reach each other on Docker: the workload name on its own internal network. */
export function dockerAddress(workload: string, port: number) {
  return { host: workload, port };
}

/** The Docker engine's socket: the log shipper reads it (read-only) to find the stack's containers and their logs. */
const DOCKER_SOCKET = '/var/run/docker.sock';

/** The prefix of a stack's Docker objects. */
export const dockerPrefixOf = (stack: string) => `agentd-${stack}`;

/** What the plan needs to know about the Docker target with objects named after `prefix`. Pure. */
export function dockerCapabilities(prefix: string): TargetCapabilities {
  return {
    address: dockerAddress,
    // Only this stack's containers: several stacks may share an engine.
    logDiscovery: { kind: 'docker', host: `unix://${DOCKER_SOCKET}`, serviceLabel: WORKLOAD_LABEL, stackLabel: { name: STACK_LABEL, value: prefix } },
    publishesOperatorPorts: true,
    mountsExternalSecrets: false,
  };
}

export class DockerTarget extends pulumi.ComponentResource implements Target {
  readonly capabilities: TargetCapabilities;
  readonly edge: docker.Network;
  private readonly args: DockerTargetArgs;
  private readonly name: string;
  private readonly networks = new Map<string, docker.Network>();

  constructor(name: string, args: DockerTargetArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:targets:DockerTarget', name, {}, opts);
    this.args = args;
    this.name = name;
    this.capabilities = dockerCapabilities(args.prefix);
    const labels = [{ label: STACK_LABEL, value: args.prefix }];
    this.edge = new docker.Network(`${name}-edge`, { name: `${args.prefix}-edge`, labels }, { parent: this });
    this.registerOutputs({ edgeNetwork: this.edge.name });
  }

  /** The internal network of `workload`: it and the workloads that call it (created on first use). */
  private networkTo(workload: string): docker.Network {
    let n = this.networks.get(workload);
    if (!n) {
      n = new docker.Network(
        `${this.name}-to-${workload}`,
        {
          name: dockerNetworkTo(this.args.prefix, workload),
          internal: true,
          labels: [{ label: STACK_LABEL, value: this.args.prefix }],
        },
        { parent: this },
      );
      this.networks.set(workload, n);
    }
    return n;
  }

  deploy(workloads: readonly Workload[], network: readonly Connection[], place: (workload: string) => Placement): Readonly<Record<string, DeployedWorkload>> {
    return Object.fromEntries(
      workloads.map((w) => {
        const peers = [...new Set(network.filter((c) => c.from === w.name).map((c) => c.to))].sort();
        return [w.name, this.deployWorkload(w, peers, place(w.name))];
      }),
    );
  }

  /** The volumes and the container of one workload, on its own network and those of the `peers` it calls. */
  private deployWorkload(w: Workload, peers: readonly string[], { parent, baseName }: Placement): DeployedWorkload {
    const { prefix } = this.args;
    const name = `${prefix}-${w.name}`;
    const labels = [
      { label: STACK_LABEL, value: prefix },
      { label: WORKLOAD_LABEL, value: w.name },
    ];
    const hash = workloadHash(w);
    const volume = (kind: string) =>
      new docker.Volume(`${baseName}-${kind}`, { name: pulumi.interpolate`${name}-${kind}-${hash}`, labels }, { parent, deleteBeforeReplace: false });
    const config = volume('config');
    const secrets = Object.keys(w.secretFiles).length > 0 ? volume('secrets') : undefined;
    const data = w.dataVolume ? new docker.Volume(`${baseName}-data`, { name: `${name}-data`, labels }, { parent, retainOnDelete: false }) : undefined;

    const secretNames = Object.keys(w.secretFiles).sort();
    const secretUploads = pulumi
      .all(secretNames.map((n) => w.secretFiles[n]!))
      .apply((values) => secretNames.map((n, i) => ({ file: `${w.secretDir}/${n}`, content: values[i]!, permissions: '0444' })));
    const uploads = pulumi
      .all([pulumi.output(w.files), secretUploads])
      .apply(([files, secretFiles]) => [...uploadsFor(w.configDir, files as WorkloadFiles), ...secretFiles]);
    const fileMounts = (readOnly: boolean) => [
      { type: 'volume', source: config.name, target: w.configDir, readOnly },
      ...(secrets ? [{ type: 'volume', source: secrets.name, target: w.secretDir, readOnly }] : []),
    ];
    // Docker writes uploads through the container's root filesystem, which is read-only for the
    // workload. So a seed container that is created but never started receives the files into
    // the volumes, and the workload mounts them read-only.
    const seed = new docker.Container(
      `${baseName}-files`,
      {
        name: pulumi.interpolate`${name}-files-${hash}`,
        image: w.image,
        entrypoints: [w.command[0]!],
        start: false,
        mustRun: false,
        networkMode: 'none',
        mounts: fileMounts(false),
        uploads,
        labels: [...labels, { label: HASH_LABEL, value: hash }, { label: ROLE_LABEL, value: 'files' }],
      },
      { parent, deleteBeforeReplace: true },
    );

    const live = w.live ? this.liveVolumes(w, name, labels, parent, baseName) : undefined;
    const edge = w.internet || w.publish !== undefined;
    const container = new docker.Container(
      baseName,
      {
        name,
        image: w.image,
        entrypoints: [w.command[0]!],
        command: w.command.slice(1),
        envs: Object.entries(w.env).map(([k, v]) => pulumi.interpolate`${k}=${v}`),
        networksAdvanced: [
          { name: this.networkTo(w.name).name, aliases: [w.name] },
          ...peers.map((peer) => ({ name: this.networkTo(peer).name })),
          ...(edge ? [{ name: this.edge.name, aliases: [w.name] }] : []),
          ...(w.internet ? this.args.extraEdgeNetworks.map((n) => ({ name: n })) : []),
        ],
        mounts: [
          ...fileMounts(true),
          ...(data && w.dataVolume ? [{ type: 'volume', source: data.name, target: w.dataVolume.mountPath }] : []),
          ...(w.readsWorkloadLogs ? [{ type: 'bind', source: DOCKER_SOCKET, target: DOCKER_SOCKET, readOnly: true }] : []),
          ...(live && w.live
            ? [
                { type: 'volume', source: live.files.name, target: w.live.dir, readOnly: true },
                { type: 'volume', source: live.secrets.name, target: w.live.secretDir, readOnly: true },
              ]
            : []),
        ],
        tmpfs: { '/tmp': 'rw,noexec,nosuid,size=64m' },
        ports: w.publish ? [{ internal: w.publish.port, external: w.publish.hostPort, ip: this.args.bindAddress, protocol: 'tcp' }] : [],
        healthcheck: { tests: ['CMD', ...w.health.command], interval: '5s', timeout: '3s', retries: 3, startPeriod: '10s' },
        // The engine's socket is root's: the log shipper reads it as root (read-only, no capabilities).
        user: w.readsWorkloadLogs ? '0:0' : `${w.user}:${w.user}`,
        ...HARDENING,
        capabilities: { drops: [...HARDENING.capabilities.drops] },
        securityOpts: [...HARDENING.securityOpts],
        memory: w.resources.memoryMiB,
        // No swap: Docker would otherwise default it to twice the memory (and report a diff).
        memorySwap: w.resources.memoryMiB,
        labels: [...labels, { label: HASH_LABEL, value: hash }, { label: ROLE_LABEL, value: 'workload' }],
        wait: true,
        waitTimeout: 90,
        destroyGraceSeconds: 15,
        logDriver: 'json-file',
        logOpts: { 'max-size': '10m', 'max-file': '3' },
      },
      // The first revision of the live files is in place before the workload starts.
      { parent, dependsOn: [seed, ...(live ? [live.writer] : [])], deleteBeforeReplace: true },
    );
    const host = this.args.bindAddress === '0.0.0.0' ? '127.0.0.1' : this.args.bindAddress;
    return { resource: container, hash, ...(w.publish ? { endpoint: pulumi.output(`${host}:${w.publish.hostPort}`) } : {}) };
  }

  /**
   * A workload's live files: two volumes with stable names (plain files, secret files), mounted
   * read-only in the workload, and per revision a writer container that runs once and installs
   * the revision in both (one atomic swap each, live-install.ts). A new revision is a new writer
   * (created before the old one is removed) and nothing else: the workload keeps running and
   * picks the swap up itself.
   */
  private liveVolumes(w: Workload, name: string, labels: docker.types.input.ContainerLabel[], parent: pulumi.Resource, baseName: string) {
    const live = w.live!;
    const files = new docker.Volume(`${baseName}-live`, { name: `${name}-live`, labels }, { parent });
    const secrets = new docker.Volume(`${baseName}-live-secrets`, { name: `${name}-live-secrets`, labels }, { parent });
    const revision = liveHash(w)!;
    const secretNames = Object.keys(live.secretFiles).sort();
    const uploads = pulumi
      .all(secretNames.map((n) => live.secretFiles[n]!))
      .apply((values) => [
        ...uploadsFor('/staging/files', live.files),
        ...secretNames.map((n, i) => ({ file: `/staging/secrets/${n}`, content: values[i]!, permissions: '0444' })),
      ]);
    const writer = new docker.Container(
      `${baseName}-live-writer`,
      {
        name: pulumi.interpolate`${name}-live-${revision}`,
        image: this.args.liveWriterImage,
        entrypoints: ['node'],
        command: revision.apply((r) => ['-e', liveInstallProgram(), '/staging/files', '/live', r, '/staging/secrets', '/live-secrets', r]),
        // Root owns the fresh volumes; it writes there and nowhere else, with no capability.
        user: '0:0',
        capabilities: { drops: ['ALL'] },
        securityOpts: ['no-new-privileges:true'],
        networkMode: 'none',
        mounts: [
          { type: 'volume', source: files.name, target: '/live' },
          { type: 'volume', source: secrets.name, target: '/live-secrets' },
        ],
        uploads,
        start: true,
        mustRun: false,
        // pulumi up waits for it to finish: the change is in place when the update returns.
        attach: true,
        restart: 'no',
        labels: [...labels, { label: HASH_LABEL, value: revision }, { label: ROLE_LABEL, value: 'live' }],
      },
      { parent, dependsOn: [files, secrets] },
    );
    return { files, secrets, writer };
  }
}
