// The target-neutral description of one service of the platform. Components say what runs
// (image, command, files, secrets, ports, health, exposure, resources); a target module says
// how (Docker containers, or Kubernetes Deployments). Nothing here knows a target.

import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';
import type { WorkloadFiles } from './render/platform.ts';

export interface WorkloadPort {
  readonly name: string;
  readonly port: number;
  /** http2 for gRPC (Kubernetes appProtocol); http otherwise. */
  readonly protocol: 'http' | 'http2';
}

/** One connection a workload opens: another workload's port. */
export interface Peer {
  readonly workload: string;
  readonly port: number;
}

/**
 * A Secret the platform does not create but mounts as files (Kubernetes only: e.g. the TLS
 * Secret cert-manager keeps renewed). Its keys become files in mountPath.
 */
export interface MountedSecret {
  readonly secretName: string;
  readonly mountPath: string;
}

export interface Workload {
  /** Short name, also its DNS name inside the platform: gateway, egress, opa, agentd. */
  readonly name: string;
  readonly image: pulumi.Input<string>;
  /** Full command line (entrypoint and arguments). */
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, pulumi.Input<string>>>;
  /** Directory the plain files are mounted at, read-only for the workload. */
  readonly configDir: string;
  /** Plain files by path relative to configDir. */
  readonly files: pulumi.Input<WorkloadFiles>;
  /** Directory the secret files are mounted at. */
  readonly secretDir: string;
  /** Secret files by path relative to secretDir: Pulumi secrets end to end. */
  readonly secretFiles: Readonly<Record<string, pulumi.Output<string>>>;
  /** Secrets that exist apart from the platform, mounted read-only (Kubernetes only). */
  readonly mountedSecrets?: readonly MountedSecret[];
  readonly ports: readonly WorkloadPort[];
  /** Liveness/readiness probe: an HTTP GET on loopback inside the workload. */
  readonly health: { readonly port: number; readonly path: string; readonly command: readonly string[] };
  /** A persistent volume (agentd's state). */
  readonly dataVolume?: { readonly mountPath: string };
  /** A port published outside the platform (the gateway; Grafana and Prometheus on loopback). */
  readonly publish?: { readonly port: number; readonly hostPort: number };
  /** Host paths mounted read-only (Docker only: the log shipper reads the Docker socket). */
  readonly hostMounts?: readonly { readonly hostPath: string; readonly mountPath: string }[];
  /** Kubernetes API read access the workload needs (the log shipper discovers pods). */
  readonly apiAccess?: readonly { readonly apiGroups: readonly string[]; readonly resources: readonly string[]; readonly verbs: readonly string[] }[];
  /** Runs as root (only the log shipper on Docker, which reads the root-owned Docker socket). */
  readonly root?: boolean;
  /**
   * The connections this workload opens: to which workload, on which of its ports (network
   * membership, NetworkPolicies: a caller reaches only the ports it needs).
   */
  readonly talksTo: readonly Peer[];
  /** Whether it reaches the internet (only the egress proxy). */
  readonly internet: boolean;
  readonly user: number;
  readonly resources: { readonly cpuMillis: number; readonly memoryMiB: number };
  readonly replicas: number;
}

/**
 * A hash of everything that should restart the workload when it changes: its files and its
 * secret files. Targets put it in a label or annotation; an unchanged workload keeps its hash,
 * so a policy change restarts exactly the workloads whose files changed.
 */
export function contentHash(files: WorkloadFiles, secrets: Readonly<Record<string, string>> = {}): string {
  const h = createHash('sha256');
  for (const [kind, set] of [
    ['file', files],
    ['secret', secrets],
  ] as const) {
    for (const p of Object.keys(set).sort()) {
      const c = set[p]!;
      h.update(`${kind}\0${p}\0`)
        .update(typeof c === 'string' ? c : `base64:${c.base64}`)
        .update('\0');
    }
  }
  return h.digest('hex').slice(0, 16);
}

/** The workload's content hash as an Output; not secret (a hash of random secrets reveals nothing). */
export function workloadHash(w: Workload): pulumi.Output<string> {
  const names = Object.keys(w.secretFiles).sort();
  return pulumi.unsecret(
    pulumi
      .all([pulumi.output(w.files), pulumi.all(names.map((n) => w.secretFiles[n]!))])
      .apply(([files, values]) => contentHash(files as WorkloadFiles, Object.fromEntries(names.map((n, i) => [n, values[i]!])))),
  );
}
