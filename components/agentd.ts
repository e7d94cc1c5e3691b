import * as pulumi from '@pulumi/pulumi';
import { ENV, HEALTH_PATH } from '../agentd/src/contract.ts';
import { DIRS, PORTS, RUN_AS_USER, WORKLOADS } from './layout.ts';
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
  /** Sandbox tiers agentd accepts: the policy's, so the two cannot drift. */
  readonly sandboxTiers: readonly string[];
  readonly logLevel: string;
  readonly defaultTtlSeconds: number;
  readonly maxTtlSeconds: number;
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
    },
    configDir: '/etc/agentd/agentd',
    files: {},
    secretDir: DIRS.secrets,
    secretFiles: { [JWKS_FILE]: args.jwks },
    ports: [
      { name: 'http', port: PORTS.agentdHttp, protocol: 'http' },
      { name: 'grpc', port: PORTS.agentdGrpc, protocol: 'http2' },
    ],
    health: { port: PORTS.agentdHttp, path: HEALTH_PATH, command: args.image.probe(`http://127.0.0.1:${PORTS.agentdHttp}${HEALTH_PATH}`) },
    dataVolume: { mountPath: DIRS.agentdData },
    talksTo: [WORKLOADS.egress],
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
