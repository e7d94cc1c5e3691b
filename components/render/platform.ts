// Every file the platform's workloads read, rendered in one place from the spec and the
// addresses a target gives. The Pulumi components, `npm run render`, the integration harness
// and `npm run dev` all call this, so what the tests run is what a deploy ships.

import { readFileSync } from 'node:fs';
import { MASK_POLICY_FILE, buildBundle, type KeyHashes } from '../../policy/bundle.ts';
import type { PolicySpec } from '../../policy/spec.ts';
import { signBundle, type BundleSigner } from '../../policy/signing.ts';
import { EGRESS_STAT_PREFIX, credentialSds, credentialSdsFile, renderEgressConfig, type EgressRenderInput } from './envoy/egress.ts';
import { LIVE_FILES, liveProxyConfig, sdsResource, type LiveProxyConfig } from './envoy/common.ts';
import { GATEWAY_STAT_PREFIX, GATEWAY_TLS_SECRET, GATEWAY_TOKEN_SECRET, renderGatewayConfig, type GatewayRenderInput } from './envoy/gateway.ts';
import { renderBundleServerConfig } from './envoy/bundles.ts';
import type { ProxyListen } from './envoy/common.ts';
import { OPA_BUNDLE_FILE, OPA_MASK_FILE, POLICY_BUNDLE_RESOURCE, renderOpaConfig, type OpaRenderInput } from './opa.ts';
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
  /** `bundle` names the bundle server (a deploy, the harness) or a file. */
  readonly opa: OpaRenderInput;
  /** The bundle server: where it listens, and its config directory (where it finds OPA_BUNDLE_FILE). */
  readonly bundles: { readonly listen: ProxyListen; readonly configDir: string };
  /**
   * The proxies' live directories: their listeners, clusters and SDS files are rendered as live
   * files there (liveProxyConfig), which the targets update in place. The SDS paths and secret
   * files the gateway and egress inputs name must be in them. Absent: everything is in the
   * bootstrap.
   */
  readonly live?: { readonly gateway: LiveDirs; readonly egress: LiveDirs };
  readonly keyHashes: KeyHashes;
  /** Signs the policy bundle (OPA verifies it with the signer's public key). Made at deploy time, like the key hashes. */
  readonly bundleSigner: BundleSigner;
}

/** A proxy's live directories: plain files (listeners, clusters, SDS files) and the secret files they name. */
export interface LiveDirs {
  readonly dir: string;
  readonly secretDir: string;
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
  /** With PlatformRenderInput.live: each proxy's live files (listeners, clusters, SDS files), by path in its live directory. */
  readonly live?: { readonly gateway: WorkloadFiles; readonly egress: WorkloadFiles };
  readonly opa: WorkloadFiles;
  /** The bundle server's files: the bundle, and its config that names the bundle's revision. */
  readonly bundles: WorkloadFiles;
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
  input: Pick<PlatformRenderInput, 'gateway' | 'gatewaySecrets' | 'egress' | 'live'>,
): Pick<RenderedPlatform, 'gateway' | 'egress' | 'live'> {
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
  const gatewaySds = {
    [GATEWAY_SDS_FILES.agentdToken]: json(sdsResource(GATEWAY_TOKEN_SECRET, { generic: gatewaySecrets.agentdTokenFile })),
    ...(gatewaySecrets.tls ? { [GATEWAY_SDS_FILES.tls]: json(sdsResource(GATEWAY_TLS_SECRET, gatewaySecrets.tls)) } : {}),
  };
  const gateway = renderGatewayConfig(spec, input.gateway);
  const egress = renderEgressConfig(spec, input.egress);
  if (!input.live) {
    return {
      gateway: { [ENVOY_CONFIG_FILE]: toYaml(gateway), ...gatewaySds },
      egress: { [ENVOY_CONFIG_FILE]: toYaml(egress), ...sds },
    };
  }
  const liveGateway = liveProxyConfig(gateway, input.live.gateway.dir, [`${GATEWAY_STAT_PREFIX}_stats`]);
  const liveEgress = liveProxyConfig(egress, input.live.egress.dir, [`${EGRESS_STAT_PREFIX}_stats`]);
  const liveFiles = (c: LiveProxyConfig, extra: WorkloadFiles): WorkloadFiles => ({
    [LIVE_FILES.lds]: toYaml(c.lds),
    [LIVE_FILES.cds]: toYaml(c.cds),
    ...extra,
  });
  return {
    gateway: { [ENVOY_CONFIG_FILE]: toYaml(liveGateway.bootstrap) },
    egress: { [ENVOY_CONFIG_FILE]: toYaml(liveEgress.bootstrap) },
    live: { gateway: liveFiles(liveGateway, gatewaySds), egress: liveFiles(liveEgress, sds) },
  };
}

/** OPA's config and decision-log mask: they do not depend on the API keys. */
export function renderOpaFiles(input: Pick<PlatformRenderInput, 'opa'>): WorkloadFiles {
  return {
    [OPA_CONFIG_FILE]: toYaml(renderOpaConfig(input.opa)),
    [OPA_MASK_FILE]: readFileSync(MASK_POLICY_FILE, 'utf8'),
  };
}

/** A bundle server holds at most this much (Envoy keeps a direct response's body in memory). */
export const MAX_BUNDLE_BYTES = 64 * 1024 * 1024;

/**
 * The bundle server's files: OPA's policy bundle, signed, and the server's config, which names
 * the bundle's revision (its ETag). The only files that depend on the API keys (the bundle holds
 * their hashes) and the signing key, so a deploy renders them once those exist, and a policy
 * change changes them and nothing else.
 */
export function renderBundleServerFiles(
  spec: PolicySpec,
  input: Pick<PlatformRenderInput, 'bundles' | 'keyHashes' | 'bundleSigner'>,
): { readonly files: WorkloadFiles; readonly policyRevision: string } {
  const bundle = signBundle(buildBundle(spec, input.keyHashes), input.bundleSigner);
  if (bundle.bytes.length > MAX_BUNDLE_BYTES)
    throw new Error(`the policy bundle is ${bundle.bytes.length} bytes; the bundle server holds at most ${MAX_BUNDLE_BYTES}`);
  const config = renderBundleServerConfig({
    listen: input.bundles.listen,
    bundles: [{ path: POLICY_BUNDLE_RESOURCE, file: `${input.bundles.configDir}/${OPA_BUNDLE_FILE}`, revision: bundle.revision }],
    maxBundleBytes: MAX_BUNDLE_BYTES,
  });
  return {
    files: { [ENVOY_CONFIG_FILE]: toYaml(config), [OPA_BUNDLE_FILE]: { base64: bundle.bytes.toString('base64') } },
    policyRevision: bundle.revision,
  };
}

/** Every file of the platform's services at once (the test harness and the benchmarks; a deploy renders the bundle server's apart: PlatformPlan). */
export function renderPlatform(spec: PolicySpec, input: PlatformRenderInput): RenderedPlatform {
  const bundles = renderBundleServerFiles(spec, input);
  return { ...renderProxyFiles(spec, input), opa: renderOpaFiles(input), bundles: bundles.files, policyRevision: bundles.policyRevision };
}
