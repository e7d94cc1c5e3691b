// The shapes every renderer, component and target shares: where a workload is reached, where an
// external service is, a workload's files, and the plan's workloads, connections and target
// capabilities. One definition each; the renderers re-export some of them.
import type { ServiceUrl } from '../../policy/url.ts';
import type { LogDiscovery } from './monitoring/alloy.ts';

/** host:port as a target gives it (loopback, Docker DNS name, Kubernetes service DNS). */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/** Where a service's requests go: the spec's base_url unless the stack overrides it. */
export type Upstream = ServiceUrl;

/**
 * A file's content: text, or binary as base64 (the OPA bundle). Plain data, not a Buffer, so it
 * passes through Pulumi outputs unchanged.
 */
export type FileContent = string | { readonly base64: string };

/** A workload's files, by path relative to its config directory. Nothing here is secret. */
export type WorkloadFiles = Readonly<Record<string, FileContent>>;

/** Which image runs a workload: the Platform resolves a role to an image reference (stack config: built here or upstream). */
export type ImageRole = 'envoy' | 'opa' | 'agentd' | 'ratelimit' | 'redis' | 'prometheus' | 'loki' | 'alloy' | 'grafana';

/**
 * A secret file's value, named rather than given: the plan is pure and holds no secret; the
 * Platform resolves each reference to a Pulumi secret (a generated value, an egress credential
 * from stack config, the gateway's certificate from stack config).
 */
export type SecretRef =
  | { readonly generated: 'jwks' | 'gateway-token' | 'registry-token' | 'grafana-admin-password' | 'policy-verification-key' }
  | { readonly credential: string }
  | { readonly gatewayTls: 'certificate' | 'privateKey' };

export interface WorkloadPort {
  readonly name: string;
  readonly port: number;
  /** http2 for gRPC (Kubernetes appProtocol); http for HTTP; tcp for anything else (Redis). */
  readonly protocol: 'http' | 'http2' | 'tcp';
}

/**
 * One service of the platform as the plan describes it, the same for every target: what runs
 * (image role and arguments, environment, files, secret files by reference, ports, health),
 * what it needs (persistent data, a published port, the internet, the other workloads' logs),
 * and its size. A target decides how (containers, Deployments).
 */
export interface PlannedWorkload {
  /** Short name, also its DNS name inside the platform: gateway, egress, opa, agentd, prometheus, ... */
  readonly name: string;
  readonly image: ImageRole;
  /** Arguments after the image's entrypoint (which the image role resolves to). */
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Directory the plain files are mounted at, read-only for the workload. */
  readonly configDir: string;
  /** Plain files by path relative to configDir (OPA's bundle is added at deploy time: PlatformPlan.bundle). */
  readonly files: WorkloadFiles;
  /** Directory the secret files are mounted at. */
  readonly secretDir: string;
  /** Secret files by path relative to secretDir, by reference. */
  readonly secretFiles: Readonly<Record<string, SecretRef>>;
  /**
   * Files the target updates in place, without restarting the workload: each change lands as one
   * atomic swap of the directory's `..data` link (Kubernetes ConfigMap and Secret volumes do
   * this; the Docker target's live volumes too), which the workload watches (the proxies'
   * listeners, clusters, SDS files and the secrets they name). Not part of the content hash.
   */
  readonly live?: {
    readonly dir: string;
    readonly files: WorkloadFiles;
    readonly secretDir: string;
    readonly secretFiles: Readonly<Record<string, SecretRef>>;
  };
  /** Secrets that exist apart from the platform (e.g. a TLS Secret cert-manager renews), by name, mounted read-only; their keys become files. */
  readonly externalSecrets?: readonly { readonly secretName: string; readonly mountPath: string }[];
  readonly ports: readonly WorkloadPort[];
  /** Readiness (and liveness, without `liveness`): an HTTP GET of `path` on loopback inside the workload, 200 when ready; without `path`, a TCP connect (Redis). */
  readonly health: { readonly port: number; readonly path?: string };
  /**
   * Liveness, where `health` also waits for a peer: the process alone. A liveness probe that fails
   * while a peer is down restarts every replica, and the peer's outage becomes this workload's
   * (OPA refuses everything after a restart until the bundle server answers again).
   */
  readonly liveness?: { readonly port: number; readonly path?: string };
  /** A persistent volume (agentd's state, the monitoring stores). */
  readonly dataVolume?: { readonly mountPath: string };
  /** A port published outside the platform (the gateway; on targets that publish them, Grafana and Prometheus). */
  readonly publish?: { readonly port: number; readonly hostPort: number };
  /** Whether it reaches the internet (only the egress proxy). */
  readonly internet: boolean;
  /**
   * Whether it reads the other workloads' logs (the log shipper): the target grants what that
   * takes (Docker: the engine's socket, read-only; Kubernetes: a Role to read pods and their logs).
   */
  readonly readsWorkloadLogs?: boolean;
  /**
   * Seconds it keeps serving once told to stop, before it is signalled: callers' load balancing
   * (Kubernetes endpoints) drops it first, so a rolling update refuses no request (the proxies).
   */
  readonly drainSeconds?: number;
  /** The non-root user it runs as. */
  readonly user: number;
  readonly resources: { readonly cpuMillis: number; readonly memoryMiB: number };
  readonly replicas: number;
  /**
   * A peer that must take connections before the process starts, because the process exits when
   * it does not (the rate-limit service without Redis). On Kubernetes, where a new pod may wait a
   * moment for its NetworkPolicies, an init container waits for it.
   */
  readonly startsAfter?: Endpoint;
}

/** One allowed connection: `from` opens connections to `to` on `port` (network membership, NetworkPolicies). */
export interface Connection {
  readonly from: string;
  readonly to: string;
  readonly port: number;
}

/**
 * What the plan needs to know about a target, as data: how workloads name each other, how the
 * log shipper finds logs, and what the target can do. Each target module exports a pure
 * function that gives its capabilities, so `npm run render` plans without Pulumi.
 */
export interface TargetCapabilities {
  /** How one workload reaches another's port (Docker DNS name, Kubernetes service DNS name). */
  address(workload: string, port: number): Endpoint;
  /** How the log shipper discovers the platform's workloads and their logs. */
  readonly logDiscovery: LogDiscovery;
  /** Whether operator UIs (Grafana, Prometheus) are published on the host (Docker, loopback); elsewhere operators port-forward. */
  readonly publishesOperatorPorts: boolean;
  /** Whether workloads can mount secrets that exist apart from the platform (Kubernetes Secrets). */
  readonly mountsExternalSecrets: boolean;
}
