import * as pulumi from '@pulumi/pulumi';
import { OPA_CONFIG_FILE, type WorkloadFiles } from './render/platform.ts';
import { OPA_MASK_FILE, OPA_MEMORY_MIB, opaRunArgs, opaRuntimeEnv } from './render/opa.ts';
import { DIRS, PORTS, RUN_AS_USER, SECRET_FILES, WORKLOADS } from './layout.ts';
import type { ImageChoice } from './images.ts';
import type { Target } from './target.ts';
import type { Workload } from './workload.ts';

export interface PolicyEngineArgs {
  /** Where OPA runs. */
  readonly target: Target;
  /** OPA (with the Envoy ext_authz plugin) image, its binary and probe. */
  readonly image: ImageChoice;
  /** The rendered OPA files (config.yaml and the bundle), from renderPlatform. */
  readonly files: pulumi.Input<WorkloadFiles>;
  /** The bearer token OPA presents to agentd for the sandbox registry bundle (secret). */
  readonly registryToken: pulumi.Output<string>;
}

/** OPA's command line: REST API on loopback only; health and metrics on the diagnostic port. */
export function opaCommand(binary: readonly string[]): string[] {
  return [
    ...binary,
    ...opaRunArgs({
      apiAddr: `127.0.0.1:${PORTS.opaApi}`,
      diagnosticAddr: `0.0.0.0:${PORTS.opaDiagnostic}`,
      configFile: `${DIRS.opa}/${OPA_CONFIG_FILE}`,
      maskFile: `${DIRS.opa}/${OPA_MASK_FILE}`,
    }),
  ];
}

export function policyEngineWorkload(args: Pick<PolicyEngineArgs, 'image' | 'files' | 'registryToken'>): Workload {
  const health = `http://127.0.0.1:${PORTS.opaDiagnostic}/health?bundles`;
  return {
    name: WORKLOADS.opa,
    image: args.image.ref,
    command: opaCommand(args.image.binary),
    env: opaRuntimeEnv(OPA_MEMORY_MIB),
    configDir: DIRS.opa,
    files: args.files,
    secretDir: DIRS.secrets,
    secretFiles: { [SECRET_FILES.registryToken]: args.registryToken },
    ports: [
      { name: 'grpc', port: PORTS.opaGrpc, protocol: 'http2' },
      { name: 'diagnostic', port: PORTS.opaDiagnostic, protocol: 'http' },
    ],
    health: { port: PORTS.opaDiagnostic, path: '/health?bundles', command: args.image.probe(health) },
    // The sandbox registry (revocation): OPA long-polls agentd for the set of active sandboxes.
    talksTo: [{ workload: WORKLOADS.agentd, port: PORTS.agentdHttp }],
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: OPA_MEMORY_MIB },
    replicas: 1,
  };
}

/** OPA serving the policy bundle to both proxies over ext_authz gRPC. */
export class PolicyEngine extends pulumi.ComponentResource {
  readonly contentHash: pulumi.Output<string>;

  constructor(name: string, args: PolicyEngineArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:policy:PolicyEngine', name, {}, opts);
    const deployed = args.target.deploy(policyEngineWorkload(args), this, name);
    this.contentHash = deployed.hash;
    this.registerOutputs({ contentHash: this.contentHash });
  }
}
