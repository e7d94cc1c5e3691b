import * as pulumi from '@pulumi/pulumi';
import { envoyArgs } from './render/envoy/common.ts';
import { ENVOY_CONFIG_FILE, type WorkloadFiles } from './render/platform.ts';
import { DIRS, PORTS, RUN_AS_USER, WORKLOADS } from './layout.ts';
import type { ImageChoice } from './images.ts';
import type { Target } from './target.ts';
import type { MountedSecret, Workload } from './workload.ts';

export interface GatewayArgs {
  /** Where the gateway runs. */
  readonly target: Target;
  /** Envoy image, its binary and probe. */
  readonly image: ImageChoice;
  /** The rendered gateway files (envoy.yaml, SDS files), from renderPlatform. */
  readonly files: pulumi.Input<WorkloadFiles>;
  /** Secret files under the secrets directory: the agentd token, and the certificate when it is stack config. */
  readonly secretFiles: Readonly<Record<string, pulumi.Output<string>>>;
  /** Kubernetes: an existing TLS Secret to serve (agentd:gateway.tls.secretName). */
  readonly tlsSecretName?: string;
  /** Replicas (Kubernetes); the Docker target runs one. */
  readonly replicas: number;
  /** Port clients reach the gateway at (Docker host port, Kubernetes Service port). */
  readonly publishedPort: number;
}

/** The gateway as a workload: the only one published outside the platform. */
export function gatewayWorkload(args: Pick<GatewayArgs, 'image' | 'files' | 'secretFiles' | 'tlsSecretName' | 'replicas' | 'publishedPort'>): Workload {
  const mounted: MountedSecret[] = args.tlsSecretName ? [{ secretName: args.tlsSecretName, mountPath: DIRS.gatewayTlsSecret }] : [];
  return {
    name: WORKLOADS.gateway,
    image: args.image.ref,
    command: [...args.image.binary, ...envoyArgs(`${DIRS.gateway}/${ENVOY_CONFIG_FILE}`)],
    env: {},
    configDir: DIRS.gateway,
    files: args.files,
    secretDir: DIRS.secrets,
    secretFiles: args.secretFiles,
    ...(mounted.length > 0 ? { mountedSecrets: mounted } : {}),
    ports: [
      { name: 'http', port: PORTS.gateway, protocol: 'http' },
      { name: 'stats', port: PORTS.envoyStats, protocol: 'http' },
    ],
    health: { port: PORTS.envoyStats, path: '/ready', command: args.image.probe(`http://127.0.0.1:${PORTS.envoyStats}/ready`) },
    publish: { port: PORTS.gateway, hostPort: args.publishedPort },
    talksTo: [
      { workload: WORKLOADS.agentd, port: PORTS.agentdHttp },
      { workload: WORKLOADS.agentd, port: PORTS.agentdGrpc },
      { workload: WORKLOADS.opa, port: PORTS.opaGrpc },
    ],
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 256 },
    replicas: args.replicas,
  };
}

/** The gateway Envoy: API keys checked by OPA, rate limits per key, routes to agentd. */
export class Gateway extends pulumi.ComponentResource {
  /** Content hash of the gateway's files (changes exactly when its config changes). */
  readonly contentHash: pulumi.Output<string>;
  /** `host:port` where clients reach the gateway (see DeployedWorkload.endpoint). */
  readonly endpoint: pulumi.Output<string>;
  /** The node port, when the target is Kubernetes with NodePort exposure. */
  readonly nodePort?: pulumi.Output<number>;

  constructor(name: string, args: GatewayArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:gateway:Gateway', name, {}, opts);
    const deployed = args.target.deploy(gatewayWorkload(args), this, name);
    this.contentHash = deployed.hash;
    this.endpoint = deployed.endpoint ?? pulumi.output(`${args.target.address('gateway', args.publishedPort).host}:${args.publishedPort}`);
    if (deployed.nodePort) this.nodePort = deployed.nodePort;
    this.registerOutputs({ contentHash: this.contentHash, endpoint: this.endpoint, nodePort: this.nodePort });
  }
}
