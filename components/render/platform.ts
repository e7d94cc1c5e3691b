// Every file the platform's workloads read, rendered in one place from the spec and the
// addresses a target gives. The Pulumi components, `npm run render`, the integration harness
// and `npm run dev` all call this, so what the tests run is what a deploy ships.

import { readFileSync } from 'node:fs';
import { MASK_POLICY_FILE, buildBundle, type KeyHashes } from '../../policy/bundle.ts';
import type { PolicySpec } from '../../policy/spec.ts';
import { credentialSds, credentialSdsFile, renderEgressConfig, type EgressRenderInput } from './envoy/egress.ts';
import { sdsResource } from './envoy/common.ts';
import { GATEWAY_TLS_SECRET, GATEWAY_TOKEN_SECRET, renderGatewayConfig, type GatewayRenderInput } from './envoy/gateway.ts';
import { OPA_BUNDLE_FILE, OPA_MASK_FILE, renderOpaConfig, type OpaRenderInput } from './opa.ts';
import { toYaml } from './yaml.ts';

export interface PlatformRenderInput {
  /** Its SDS files are the ones GATEWAY_SDS_FILES names, under GatewayRenderInput's paths. */
  readonly gateway: GatewayRenderInput;
  /** Where the gateway's secret files are (absolute paths in the workload): what its SDS files name. */
  readonly gatewaySecrets: {
    readonly agentdTokenFile: string;
    readonly tls?: { readonly certificateChain: string; readonly privateKey: string };
  };
  readonly egress: EgressRenderInput;
  /** `bundlePath` is where the workload finds OPA_BUNDLE_FILE. */
  readonly opa: OpaRenderInput;
  readonly keyHashes: KeyHashes;
}

import type { FileContent, WorkloadFiles } from './types.ts';

export type { FileContent, WorkloadFiles };

/**
 * The JWKS document agentd signs sandbox tokens with and the egress proxy verifies them with
 * (one HS256 "oct" key). The one place its shape is written.
 */
export function jwksDocument(kid: string, keyBase64url: string): string {
  return JSON.stringify({ keys: [{ kty: 'oct', kid, alg: 'HS256', use: 'sig', k: keyBase64url }] });
}

/** The bytes of a file, for writing it to disk. */
export const fileBytes = (c: FileContent): Buffer => (typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.from(c.base64, 'base64'));

export interface RenderedPlatform {
  readonly gateway: WorkloadFiles;
  readonly egress: WorkloadFiles;
  readonly opa: WorkloadFiles;
  /** The bundle's content hash: changes exactly when policy or data change. */
  readonly policyRevision: string;
}

export const ENVOY_CONFIG_FILE = 'envoy.yaml';
export const OPA_CONFIG_FILE = 'config.yaml';
/** SDS files live here, relative to the egress config directory (EgressRenderInput.sdsDir). */
export const EGRESS_SDS_SUBDIR = 'sds';
/** The gateway's SDS files, relative to its config directory. */
export const GATEWAY_SDS_FILES = { agentdToken: 'sds/agentd-token.sds.json', tls: 'sds/tls.sds.json' } as const;

/**
 * The proxies' files: they do not depend on the API keys, so a deploy renders them as plain
 * values (known in `pulumi preview` even when a new client's key is not generated yet).
 */
export function renderProxyFiles(
  spec: PolicySpec,
  input: Pick<PlatformRenderInput, 'gateway' | 'gatewaySecrets' | 'egress'>,
): Pick<RenderedPlatform, 'gateway' | 'egress'> {
  const sds: Record<string, string> = {};
  for (const s of Object.values(spec.egressServices)) {
    if (s.credential && input.egress.configuredCredentials.includes(s.id)) {
      sds[`${EGRESS_SDS_SUBDIR}/${credentialSdsFile(s.id)}`] = JSON.stringify(credentialSds(s.id, input.egress.credentialDir), null, 2) + '\n';
    }
  }
  const json = (o: object) => JSON.stringify(o, null, 2) + '\n';
  const { gatewaySecrets } = input;
  if (Boolean(input.gateway.tls) !== Boolean(gatewaySecrets.tls))
    throw new Error('renderPlatform: the gateway TLS listener and its certificate files must be given together');
  return {
    gateway: {
      [ENVOY_CONFIG_FILE]: toYaml(renderGatewayConfig(spec, input.gateway)),
      [GATEWAY_SDS_FILES.agentdToken]: json(sdsResource(GATEWAY_TOKEN_SECRET, { generic: gatewaySecrets.agentdTokenFile })),
      ...(gatewaySecrets.tls ? { [GATEWAY_SDS_FILES.tls]: json(sdsResource(GATEWAY_TLS_SECRET, gatewaySecrets.tls)) } : {}),
    },
    egress: { [ENVOY_CONFIG_FILE]: toYaml(renderEgressConfig(spec, input.egress)), ...sds },
  };
}

/** OPA's config and decision-log mask: they do not depend on the API keys. */
export function renderOpaFiles(input: Pick<PlatformRenderInput, 'opa'>): WorkloadFiles {
  return {
    [OPA_CONFIG_FILE]: toYaml(renderOpaConfig(input.opa)),
    [OPA_MASK_FILE]: readFileSync(MASK_POLICY_FILE, 'utf8'),
  };
}

/** OPA's policy bundle: the only file that depends on the API keys (it holds their hashes). */
export function renderBundleFile(spec: PolicySpec, keyHashes: KeyHashes): { readonly files: WorkloadFiles; readonly policyRevision: string } {
  const bundle = buildBundle(spec, keyHashes);
  return { files: { [OPA_BUNDLE_FILE]: { base64: bundle.bytes.toString('base64') } }, policyRevision: bundle.revision };
}

/** Every file of the four services at once (the test harness and the benchmarks; a deploy renders the bundle apart: PlatformPlan). */
export function renderPlatform(spec: PolicySpec, input: PlatformRenderInput): RenderedPlatform {
  const bundle = renderBundleFile(spec, input.keyHashes);
  return { ...renderProxyFiles(spec, input), opa: { ...renderOpaFiles(input), ...bundle.files }, policyRevision: bundle.policyRevision };
}
