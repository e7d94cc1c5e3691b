// Fixed inputs for renderer tests: the shipped policy data and loopback endpoints.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { bundleSignerFromSeed, type BundleSigner } from '../../policy/signing.ts';
import { loadPolicySpec } from '../../policy/spec.ts';
import type { GatewayRenderInput } from '../../components/render/envoy/gateway.ts';
import type { EgressRenderInput } from '../../components/render/envoy/egress.ts';
import { DEFAULT_PROXY_LIMITS } from '../../components/render/envoy/common.ts';
import { REPO_ROOT } from './tools.ts';

export const shippedSpec = () => loadPolicySpec(join(REPO_ROOT, 'policy/data'));

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
