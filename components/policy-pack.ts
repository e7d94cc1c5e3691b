// The policy pack's config (policy/pack): the facts its rules check deployed resources against,
// from the layout the targets deploy, and the pack's command-line flags. Pure; the npm scripts
// write the config file and pass the flags to every `pulumi preview` and `pulumi up`.

import type { PackFacts, RuleName } from '../policy/pack/rules.ts';
import { RULES } from '../policy/pack/rules.ts';
import type { StackConfig } from './config.ts';
import { PORTS, WORKLOADS } from './layout.ts';
import { MONITORING_PORTS } from './render/overlay/index.ts';
import { ROLE_LABEL, WORKLOAD_LABEL } from './targets/docker.ts';
import { NAME_LABEL } from './targets/kubernetes.ts';

/** The policy pack, as the Pulumi CLI runs it (an analyzer plugin launched as a program), relative to the repository. */
export const POLICY_PACK = 'policy/pack/run';

/** What each internal port is, for the pack's messages. */
const PORT_NAMES: Readonly<Record<number, string>> = {
  [PORTS.envoyAdmin]: 'Envoy admin',
  [PORTS.envoyStats]: 'Envoy stats',
  [PORTS.egress]: 'egress proxy',
  [PORTS.opaGrpc]: 'OPA ext_authz gRPC',
  [PORTS.opaApi]: 'OPA REST API',
  [PORTS.opaDiagnostic]: 'OPA health and metrics',
  [PORTS.bundles]: 'bundle server',
  [PORTS.agentdHttp]: 'agentd HTTP API',
  [PORTS.agentdGrpc]: 'agentd gRPC API',
  [PORTS.agentdMetrics]: 'agentd metrics',
  [PORTS.rateLimitGrpc]: 'rate-limit service gRPC',
  [PORTS.rateLimitHttp]: 'rate-limit service health',
  [PORTS.rateLimitDebug]: 'rate-limit service debug',
  [PORTS.redis]: 'Redis',
};

/** The facts of the platform's layout: the gateway publishes its API port, the monitoring overlay its two UIs, nothing else publishes anything. */
export function policyPackFacts(): PackFacts {
  return {
    publishable: {
      [WORKLOADS.gateway]: [PORTS.gateway],
      grafana: [MONITORING_PORTS.grafana],
      prometheus: [MONITORING_PORTS.prometheus],
    },
    portNames: Object.fromEntries(Object.entries(PORT_NAMES)),
    gateway: WORKLOADS.gateway,
    bundleServer: WORKLOADS.bundles,
    workloadLabel: { docker: WORKLOAD_LABEL, kubernetes: NAME_LABEL },
    roleLabel: ROLE_LABEL,
  };
}

/**
 * The pack's config file for a stack (`--policy-pack-config`): every rule mandatory with the
 * facts; a stack that sets `agentd:gateway.allowPlaintext` (TLS ends in front of the gateway)
 * has the TLS rule warn instead, so the acknowledgement shows in every preview.
 */
export function policyPackConfig(
  stack: Pick<StackConfig['gateway'], 'allowPlaintext'>,
): Record<RuleName, { enforcementLevel: 'mandatory' | 'advisory'; facts: PackFacts }> {
  const facts = policyPackFacts();
  const level = (rule: RuleName) => (rule === 'tls-beyond-loopback' && stack.allowPlaintext ? 'advisory' : 'mandatory');
  return Object.fromEntries((Object.keys(RULES) as RuleName[]).map((rule) => [rule, { enforcementLevel: level(rule), facts }])) as Record<
    RuleName,
    { enforcementLevel: 'mandatory' | 'advisory'; facts: PackFacts }
  >;
}
