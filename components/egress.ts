import * as pulumi from '@pulumi/pulumi';
import { envoyArgs } from './render/envoy/common.ts';
import { ENVOY_CONFIG_FILE, type WorkloadFiles } from './render/platform.ts';
import { DIRS, PORTS, RUN_AS_USER, WORKLOADS } from './layout.ts';
import type { ImageChoice } from './images.ts';
import type { Target } from './target.ts';
import type { Workload } from './workload.ts';

export interface EgressArgs {
  /** Where the egress proxy runs. */
  readonly target: Target;
  /** Envoy image, its binary and probe. */
  readonly image: ImageChoice;
  /** The rendered egress files (envoy.yaml, SDS files, CA bundle), from renderPlatform. */
  readonly files: pulumi.Input<WorkloadFiles>;
  /** Secret files by path under the secrets directory: the JWKS and one credential per service. */
  readonly secretFiles: Readonly<Record<string, pulumi.Output<string>>>;
  readonly replicas: number;
}

/** The egress proxy as a workload: the only one that reaches the internet. */
export function egressWorkload(args: Pick<EgressArgs, 'image' | 'files' | 'secretFiles' | 'replicas'>): Workload {
  return {
    name: WORKLOADS.egress,
    image: args.image.ref,
    command: [...args.image.binary, ...envoyArgs(`${DIRS.egress}/${ENVOY_CONFIG_FILE}`)],
    env: {},
    configDir: DIRS.egress,
    files: args.files,
    secretDir: DIRS.secrets,
    secretFiles: args.secretFiles,
    ports: [
      { name: 'http', port: PORTS.egress, protocol: 'http' },
      { name: 'stats', port: PORTS.envoyStats, protocol: 'http' },
    ],
    health: { port: PORTS.envoyStats, path: '/ready', command: args.image.probe(`http://127.0.0.1:${PORTS.envoyStats}/ready`) },
    talksTo: [{ workload: WORKLOADS.opa, port: PORTS.opaGrpc }],
    internet: true,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 256 },
    replicas: args.replicas,
  };
}

/** The egress Envoy: verifies sandbox tokens, asks OPA, injects credentials, limits per sandbox x service. */
export class Egress extends pulumi.ComponentResource {
  readonly contentHash: pulumi.Output<string>;

  constructor(name: string, args: EgressArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:egress:Egress', name, {}, opts);
    const deployed = args.target.deploy(egressWorkload(args), this, name);
    this.contentHash = deployed.hash;
    this.registerOutputs({ contentHash: this.contentHash });
  }
}
