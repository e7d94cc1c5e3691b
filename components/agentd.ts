import * as pulumi from '@pulumi/pulumi';
import { ENV, HEALTH_PATH } from '../agentd/src/contract.ts';
import { DIRS, PORTS, RUN_AS_USER, SECRET_FILES, WORKLOADS } from './layout.ts';
import type { ImageChoice } from './images.ts';
import type { Target } from './target.ts';
import type { Workload } from './workload.ts';

/** The JWKS file agentd signs sandbox tokens with (and the egress proxy verifies them with). */
export const JWKS_FILE = 'jwks.json';

export interface AgentdArgs {
  readonly target: Target;
  /** agentd image, its entrypoint and probe. */
  readonly image: ImageChoice;
  /** The JWKS document (secret). */
  readonly jwks: pulumi.Output<string>;
  /** The per-deploy token the gateway sends with every API request (secret). */
  readonly gatewayToken: pulumi.Output<string>;
  /** The token OPA presents to fetch the sandbox registry (secret). */
  readonly registryToken: pulumi.Output<string>;
  /** Sandbox tiers agentd accepts: the policy's, so the two cannot drift. */
  readonly sandboxTiers: readonly string[];
  readonly logLevel: string;
  readonly defaultTtlSeconds: number;
  readonly maxTtlSeconds: number;
  readonly retentionDays: number;
  readonly retentionIntentsPerSandbox: number;
  readonly maxActiveSandboxesPerClient: number;
}

export function agentdWorkload(args: Omit<AgentdArgs, 'target'>): Workload {
  return {
    name: WORKLOADS.agentd,
    image: args.image.ref,
    command: [...args.image.binary],
    env: {
      [ENV.mode]: 'production',
      [ENV.httpListen]: `0.0.0.0:${PORTS.agentdHttp}`,
      [ENV.grpcListen]: `0.0.0.0:${PORTS.agentdGrpc}`,
      [ENV.egressUrl]: `http://${WORKLOADS.egress}:${PORTS.egress}`,
      [ENV.dataDir]: DIRS.agentdData,
      [ENV.tokenKeyFile]: `${DIRS.secrets}/${JWKS_FILE}`,
      [ENV.sandboxTiers]: args.sandboxTiers.join(','),
      [ENV.logLevel]: args.logLevel,
      [ENV.defaultTtlSeconds]: String(args.defaultTtlSeconds),
      [ENV.maxTtlSeconds]: String(args.maxTtlSeconds),
      [ENV.metricsListen]: `0.0.0.0:${PORTS.agentdMetrics}`,
      [ENV.gatewayTokenFile]: `${DIRS.secrets}/${SECRET_FILES.gatewayToken}`,
      [ENV.registryTokenFile]: `${DIRS.secrets}/${SECRET_FILES.registryToken}`,
      [ENV.retentionDays]: String(args.retentionDays),
      [ENV.retentionIntentsPerSandbox]: String(args.retentionIntentsPerSandbox),
      [ENV.maxActiveSandboxesPerClient]: String(args.maxActiveSandboxesPerClient),
    },
    configDir: '/etc/agentd/agentd',
    files: {},
    secretDir: DIRS.secrets,
    secretFiles: { [JWKS_FILE]: args.jwks, [SECRET_FILES.gatewayToken]: args.gatewayToken, [SECRET_FILES.registryToken]: args.registryToken },
    ports: [
      { name: 'http', port: PORTS.agentdHttp, protocol: 'http' },
      { name: 'grpc', port: PORTS.agentdGrpc, protocol: 'http2' },
      { name: 'metrics', port: PORTS.agentdMetrics, protocol: 'http' },
    ],
    health: { port: PORTS.agentdHttp, path: HEALTH_PATH, command: args.image.probe(`http://127.0.0.1:${PORTS.agentdHttp}${HEALTH_PATH}`) },
    dataVolume: { mountPath: DIRS.agentdData },
    talksTo: [{ workload: WORKLOADS.egress, port: PORTS.egress }],
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 256 },
    replicas: 1,
  };
}

/** The agentd daemon: sandboxes and their intents; reaches the internet only through egress. */
export class Agentd extends pulumi.ComponentResource {
  readonly contentHash: pulumi.Output<string>;

  constructor(name: string, args: AgentdArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:agentd:Agentd', name, {}, opts);
    const deployed = args.target.deploy(agentdWorkload(args), this, name);
    this.contentHash = deployed.hash;
    this.registerOutputs({ contentHash: this.contentHash });
  }
}
