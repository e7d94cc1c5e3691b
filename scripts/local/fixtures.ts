// Fixed inputs for renderer tests: the shipped policy data and loopback endpoints.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { bundleSignerFromSeed, type BundleSigner } from '../../policy/signing.ts';
import { readFileSync } from 'node:fs';
import { POLICY_FILES, loadPolicySpec, parsePolicySpec, type PolicySources, type PolicySpec } from '../../policy/spec.ts';
import type { GatewayRenderInput } from '../../components/render/envoy/gateway.ts';
import type { EgressRenderInput } from '../../components/render/envoy/egress.ts';
import { DEFAULT_PROXY_LIMITS } from '../../components/render/envoy/common.ts';
import { REPO_ROOT } from './tools.ts';

export const shippedSpec = () => loadPolicySpec(join(REPO_ROOT, 'policy/data'));

/** A policy file's text edited: [what to find, what to put instead]. */
export type PolicyEdit = readonly [RegExp | string, string];

/**
 * The shipped policy data with some numbers changed (a test's small limits, a benchmark's
 * limits out of reach), each edit on the text of its file. An edit that finds nothing throws:
 * the shipped data changed shape, and the caller would otherwise test the shipped numbers.
 */
export function shippedSpecWith(edits: Partial<Record<keyof typeof POLICY_FILES, readonly PolicyEdit[]>>): PolicySpec {
  const sources = Object.fromEntries(
    (Object.keys(POLICY_FILES) as (keyof typeof POLICY_FILES)[]).map((k) => {
      let text = readFileSync(join(REPO_ROOT, 'policy/data', POLICY_FILES[k]), 'utf8');
      for (const [find, put] of edits[k] ?? []) {
        const next = text.replace(find, put);
        if (next === text) throw new Error(`policy/data/${POLICY_FILES[k]} has no ${String(find)} any more: update the edit`);
        text = next;
      }
      return [k, text];
    }),
  ) as PolicySources;
  return parsePolicySpec(sources);
}

/** A policy bundle signer with a key made afresh, as a deploy makes one (the harness, the benchmarks, `npm run render`). */
export const ephemeralBundleSigner = (): BundleSigner => bundleSignerFromSeed(randomBytes(48).toString('base64url'));

export const gatewayInput: GatewayRenderInput = {
  listen: { traffic: { host: '0.0.0.0', port: 8080 }, adminPort: 9901, stats: { host: '0.0.0.0', port: 9902 } },
  agentdHttp: { host: 'agentd', port: 8090 },
  agentdGrpc: { host: 'agentd', port: 9500 },
  opa: { host: 'opa', port: 9191 },
  maxRequestBytes: 1 << 20,
  upstreamTimeoutSeconds: 60,
  agentdTokenSdsFile: '/etc/agentd/gateway/sds/agentd-token.sds.json',
  limits: DEFAULT_PROXY_LIMITS,
};

export const egressInput: EgressRenderInput = {
  listen: { traffic: { host: '0.0.0.0', port: 8443 }, adminPort: 9901, stats: { host: '0.0.0.0', port: 9902 } },
  opa: { host: 'opa', port: 9191 },
  jwksFile: '/etc/agentd/egress/jwks.json',
  sdsDir: '/etc/agentd/egress/sds',
  credentialDir: '/run/secrets/agentd-egress',
  caBundleFile: '/etc/ssl/certs/ca-certificates.crt',
  // httpbin has no credential (it echoes request headers): listing it here would change nothing.
  configuredCredentials: ['openai', 'anthropic', 'github'],
  limits: DEFAULT_PROXY_LIMITS,
};
