// The platform plan: every workload of a stack with its files, the network graph and the one
// file left for deploy time, from the policy spec, the stack config and what the target can do.
// Pure (no Pulumi): the Platform component resolves images and secret references and hands the
// whole plan to the target in one call; `npm run render` writes it; the goldens under
// test/golden/plans hold it for every shipped stack.

import type { KeyHashes } from '../../policy/bundle.ts';
import type { PolicySpec } from '../../policy/spec.ts';
import type { BundleSigner } from '../../policy/signing.ts';
import type { StackConfig } from '../config.ts';
import { PORTS, WORKLOADS } from '../layout.ts';
import { MONITORING_CONNECTIONS, planMonitoring } from './overlay/index.ts';
import { renderBundleServerFiles, renderOpaFiles, renderProxyFiles, type PlatformRenderInput } from './platform.ts';
import type { Connection, PlannedWorkload, SecretRef, TargetCapabilities, WorkloadFiles } from './types.ts';
import {
  agentdWorkload,
  bundleServerWorkload,
  egressWorkload,
  gatewayWorkload,
  platformRenderInput,
  policyEngineWorkload,
  rateLimitServiceWorkload,
  redisWorkload,
} from './workloads.ts';

export interface PlatformPlan {
  /** Every workload, the monitoring overlay's included when the stack enables it. */
  readonly workloads: readonly PlannedWorkload[];
  /** Every allowed connection between workloads; nothing else may connect (targets enforce it). */
  readonly network: readonly Connection[];
  /**
   * The bundle server, the one workload whose files depend on the API keys and the signing key
   * made at deploy time (OPA's policy bundle holds the keys' hashes and is signed, the server's
   * config names its revision): renderPlanBundle renders them. Keeping them apart means a new client changes the bundle
   * server's files in `pulumi preview`, and nothing else; OPA takes the new bundle from it
   * without a restart.
   */
  readonly bundleServer: { readonly workload: string; readonly input: PlatformRenderInput['bundles'] };
}

/**
 * Who the four services talk to: the gateway calls agentd's API (HTTP and gRPC) and OPA; the
 * egress proxy calls OPA; OPA long-polls agentd's sandbox registry (revocation); agentd reaches
 * the internet only through the egress proxy.
 */
const PLATFORM_CONNECTIONS: readonly Connection[] = [
  { from: WORKLOADS.gateway, to: WORKLOADS.agentd, port: PORTS.agentdHttp },
  { from: WORKLOADS.gateway, to: WORKLOADS.agentd, port: PORTS.agentdGrpc },
  { from: WORKLOADS.gateway, to: WORKLOADS.opa, port: PORTS.opaGrpc },
  { from: WORKLOADS.egress, to: WORKLOADS.opa, port: PORTS.opaGrpc },
  { from: WORKLOADS.opa, to: WORKLOADS.bundles, port: PORTS.bundles },
  { from: WORKLOADS.opa, to: WORKLOADS.agentd, port: PORTS.agentdHttp },
  { from: WORKLOADS.agentd, to: WORKLOADS.egress, port: PORTS.egress },
  // Global rate limits: both proxies ask the rate-limit service, which alone reaches Redis.
  { from: WORKLOADS.gateway, to: WORKLOADS.ratelimit, port: PORTS.rateLimitGrpc },
  { from: WORKLOADS.egress, to: WORKLOADS.ratelimit, port: PORTS.rateLimitGrpc },
  { from: WORKLOADS.ratelimit, to: WORKLOADS.redis, port: PORTS.redis },
];

/** Why a plan cannot be deployed to a target, or undefined. */
function unsupported(workloads: readonly PlannedWorkload[], capabilities: TargetCapabilities): string | undefined {
  const external = workloads.filter((w) => (w.externalSecrets ?? []).length > 0);
  if (external.length > 0 && !capabilities.mountsExternalSecrets) {
    const names = external.flatMap((w) => w.externalSecrets!.map((s) => `${w.name}: ${s.secretName}`));
    return `this target cannot mount existing secrets (${names.join(', ')}); give the files as secret stack config instead`;
  }
  return undefined;
}

/**
 * The whole platform for a stack. `configuredCredentials` are the egress services whose
 * credential is set in the stack's secret config (the others answer 503 credential_not_configured).
 */
export function planPlatform(spec: PolicySpec, config: StackConfig, capabilities: TargetCapabilities, configuredCredentials: readonly string[]): PlatformPlan {
  const input = platformRenderInput(config, capabilities.address, configuredCredentials);
  const proxies = renderProxyFiles(spec, input);
  // Back to front: the policy engine, agentd, the egress proxy, the gateway, then monitoring.
  const workloads = [
    ...(config.rateLimits.mode === 'global' ? [redisWorkload(), rateLimitServiceWorkload(spec, config, capabilities.address)] : []),
    policyEngineWorkload(renderOpaFiles(input)),
    bundleServerWorkload(),
    agentdWorkload(config, Object.keys(spec.sandboxTiers)),
    egressWorkload(config, proxies.egress, proxies.live?.egress ?? {}, configuredCredentials),
    gatewayWorkload(config, proxies.gateway, proxies.live?.gateway ?? {}),
    ...(config.monitoring.enabled
      ? planMonitoring(spec, capabilities, { grafana: config.monitoring.grafanaPort, prometheus: config.monitoring.prometheusPort })
      : []),
  ];
  const problem = unsupported(workloads, capabilities);
  if (problem) throw new Error(problem);
  const present = new Set(workloads.map((w) => w.name));
  const network = [...PLATFORM_CONNECTIONS, ...MONITORING_CONNECTIONS].filter((c) => present.has(c.from) && present.has(c.to));
  return { workloads, network, bundleServer: { workload: WORKLOADS.bundles, input: input.bundles } };
}

/** The bundle server's files for the deployed keys and signing key, and the policy revision (the bundle's content hash). */
export function renderPlanBundle(
  plan: PlatformPlan,
  spec: PolicySpec,
  keyHashes: KeyHashes,
  bundleSigner: BundleSigner,
): { readonly files: WorkloadFiles; readonly policyRevision: string } {
  return renderBundleServerFiles(spec, { bundles: plan.bundleServer.input, keyHashes, bundleSigner });
}

/** How a secret reference reads in plan.json. */
function describeSecret(ref: SecretRef): string {
  if ('generated' in ref) return `generated:${ref.generated}`;
  if ('credential' in ref) return `stack config: egress credential of ${ref.credential}`;
  return `stack config: gateway TLS ${ref.gatewayTls}`;
}

/**
 * The plan as text files, for `npm run render` and the goldens: `plan.json` (every workload
 * without its file contents, the network, the bundle server) and each workload's files under
 * its name. Binary files (none are planned: the bundle comes at deploy time) are refused.
 */
export function planFiles(plan: PlatformPlan): Record<string, string> {
  const out: Record<string, string> = {};
  const summary = plan.workloads.map((w) => {
    for (const [p, content] of Object.entries(w.files)) {
      if (typeof content !== 'string') throw new Error(`${w.name}/${p} is binary: planFiles writes text files only`);
      out[`${w.name}/${p}`] = content;
    }
    for (const [p, content] of Object.entries(w.live?.files ?? {})) {
      if (typeof content !== 'string') throw new Error(`${w.name}/live/${p} is binary: planFiles writes text files only`);
      out[`${w.name}/live/${p}`] = content;
    }
    return {
      ...w,
      files: Object.keys(w.files).sort(),
      secretFiles: Object.fromEntries(
        Object.keys(w.secretFiles)
          .sort()
          .map((p) => [p, describeSecret(w.secretFiles[p]!)]),
      ),
      ...(w.live
        ? {
            live: {
              dir: w.live.dir,
              files: Object.keys(w.live.files).sort(),
              secretDir: w.live.secretDir,
              secretFiles: Object.fromEntries(
                Object.keys(w.live.secretFiles)
                  .sort()
                  .map((p) => [p, describeSecret(w.live!.secretFiles[p]!)]),
              ),
            },
          }
        : {}),
    };
  });
  out['plan.json'] = `${JSON.stringify({ workloads: summary, network: plan.network, bundleServer: plan.bundleServer }, null, 2)}\n`;
  return out;
}
