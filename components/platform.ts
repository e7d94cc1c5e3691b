import { createHash } from 'node:crypto';
import * as pulumi from '@pulumi/pulumi';
import * as random from '@pulumi/random';
import { sha256Hex } from '../policy/bundle.ts';
import type { PolicySpec } from '../policy/spec.ts';
import { Agentd, JWKS_FILE } from './agentd.ts';
import type { StackConfig } from './config.ts';
import { Egress } from './egress.ts';
import { Gateway } from './gateway.ts';
import type { ImageSet } from './images.ts';
import { DIRS, PORTS, SECRET_FILES, WORKLOADS } from './layout.ts';
import { PolicyEngine } from './policy-engine.ts';
import { Monitoring } from './monitoring.ts';
import { DEFAULT_PROXY_LIMITS } from './render/envoy/common.ts';
import { credentialValueFile } from './render/envoy/egress.ts';
import { OPA_BUNDLE_FILE } from './render/opa.ts';
import { EGRESS_SDS_SUBDIR, GATEWAY_SDS_FILES, jwksDocument, renderPolicyFiles, renderProxyFiles, type PlatformRenderInput } from './render/platform.ts';
import type { Target } from './target.ts';

export interface PlatformArgs {
  /** The validated policy spec (policy/data). */
  readonly spec: PolicySpec;
  /** The validated stack config. */
  readonly config: StackConfig;
  /** Images for each workload. */
  readonly images: ImageSet;
  /** Where everything runs. */
  readonly target: Target;
  /** Configured egress credentials (Pulumi secrets), by service id. */
  readonly credentials: Readonly<Record<string, pulumi.Output<string>>>;
  /** The gateway's certificate chain and private key (PEM, Pulumi secrets), when TLS comes from stack config. */
  readonly gatewayTls?: { readonly certificate: pulumi.Output<string>; readonly privateKey: pulumi.Output<string> };
  /** Docker: the prefix of the stack's objects (the log shipper keeps to this stack). */
  readonly dockerPrefix?: string;
}

/** File name of the extra CA certificates in the egress config directory. */
export const EGRESS_CA_FILE = 'upstream-ca.pem';
const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** Where each workload finds the others, for a target. Pure. */
export function platformRenderInput(
  config: StackConfig,
  target: Pick<Target, 'address'>,
  configuredCredentials: readonly string[],
  keyHashes: Record<string, string>,
): PlatformRenderInput {
  const any = (port: number) => ({ host: '0.0.0.0', port });
  const tls = config.gateway.tls;
  // The certificate: secret files the platform writes, or the keys of a mounted TLS Secret.
  const tlsDir = tls?.source === 'secret' ? DIRS.gatewayTlsSecret : DIRS.secrets;
  const agentdHttp = target.address(WORKLOADS.agentd, PORTS.agentdHttp);
  return {
    gateway: {
      listen: { traffic: any(PORTS.gateway), adminPort: PORTS.envoyAdmin, stats: any(PORTS.envoyStats) },
      agentdHttp,
      agentdGrpc: target.address(WORKLOADS.agentd, PORTS.agentdGrpc),
      opa: target.address(WORKLOADS.opa, PORTS.opaGrpc),
      maxRequestBytes: config.gateway.maxRequestBytes,
      upstreamTimeoutSeconds: config.gateway.upstreamTimeoutSeconds,
      agentdTokenSdsFile: `${DIRS.gateway}/${GATEWAY_SDS_FILES.agentdToken}`,
      ...(tls ? { tls: { sdsFile: `${DIRS.gateway}/${GATEWAY_SDS_FILES.tls}` } } : {}),
      limits: DEFAULT_PROXY_LIMITS,
    },
    gatewaySecrets: {
      agentdTokenFile: `${DIRS.secrets}/${SECRET_FILES.gatewayToken}`,
      ...(tls ? { tls: { certificateChain: `${tlsDir}/${SECRET_FILES.tlsCertificate}`, privateKey: `${tlsDir}/${SECRET_FILES.tlsPrivateKey}` } } : {}),
    },
    egress: {
      listen: { traffic: any(PORTS.egress), adminPort: PORTS.envoyAdmin, stats: any(PORTS.envoyStats) },
      opa: target.address(WORKLOADS.opa, PORTS.opaGrpc),
      jwksFile: `${DIRS.secrets}/${JWKS_FILE}`,
      sdsDir: `${DIRS.egress}/${EGRESS_SDS_SUBDIR}`,
      credentialDir: `${DIRS.secrets}/credentials`,
      caBundleFile: config.egress.caCertificates ? `${DIRS.egress}/${EGRESS_CA_FILE}` : SYSTEM_CA_BUNDLE,
      upstreams: config.egress.upstreams,
      configuredCredentials,
      limits: DEFAULT_PROXY_LIMITS,
    },
    opa: {
      grpc: { host: '0.0.0.0', port: PORTS.opaGrpc },
      bundlePath: `${DIRS.opa}/${OPA_BUNDLE_FILE}`,
      registry: { url: `http://${agentdHttp.host}:${agentdHttp.port}`, tokenFile: `${DIRS.secrets}/${SECRET_FILES.registryToken}` },
    },
    keyHashes,
  };
}

/** A JWKS with one HS256 key; the key id is derived from the key, so a new key is a new kid. */
export function jwksFor(secret: string): string {
  const k = Buffer.from(secret, 'utf8').toString('base64url');
  const kid = createHash('sha256').update(secret).digest('hex').slice(0, 12);
  return jwksDocument(kid, k);
}

/**
 * The whole platform: API keys and the token key (generated), every config rendered from the
 * spec, and the four services on the target.
 */
export class Platform extends pulumi.ComponentResource {
  /** Where API clients call the gateway (HTTP). */
  readonly gatewayUrl: pulumi.Output<string>;
  /** host:port for gRPC clients (through the gateway: TLS when the gateway has a certificate, else plaintext HTTP/2). */
  readonly grpcEndpoint: pulumi.Output<string>;
  /** Kubernetes with NodePort exposure: the gateway's node port (reach it on any node's address). */
  readonly gatewayNodePort?: pulumi.Output<number>;
  /** API keys by client id: a secret. */
  readonly apiKeys: pulumi.Output<Record<string, string>>;
  /** The policy bundle's content hash. */
  readonly policyRevision: pulumi.Output<string>;
  /** Content hash of each workload's files. */
  readonly contentHashes: pulumi.Output<Record<string, string>>;
  /** The monitoring overlay, when the stack enables it. */
  readonly monitoring?: Monitoring;

  constructor(name: string, args: PlatformArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:platform:Platform', name, {}, opts);
    const { spec, config, images, target } = args;

    const keys = spec.clients.map((c) => [c.id, new random.RandomPassword(`${name}-key-${c.id}`, { length: 40, special: false }, { parent: this })] as const);
    this.apiKeys = pulumi.secret(
      pulumi.all(keys.map(([, k]) => k.result)).apply((values) => Object.fromEntries(keys.map(([id], i) => [id, `agk_${values[i]}`]))),
    );
    // Hashes of random 40-character keys reveal nothing; only they reach OPA.
    const keyHashes = pulumi.unsecret(this.apiKeys.apply((k) => Object.fromEntries(Object.entries(k).map(([id, v]) => [id, sha256Hex(v)]))));

    const tokenKey = new random.RandomPassword(`${name}-token-key`, { length: 64, special: false }, { parent: this });
    const jwks = pulumi.secret(tokenKey.result.apply(jwksFor));
    // Per-deploy tokens that let agentd tell its two callers from anything else on the network.
    const secretToken = (id: string) => pulumi.secret(new random.RandomPassword(`${name}-${id}`, { length: 48, special: false }, { parent: this }).result);
    const gatewayToken = secretToken('gateway-token');
    const registryToken = secretToken('registry-token');

    const configured = Object.keys(args.credentials);
    // Only OPA's files depend on the generated keys (the bundle holds their hashes): they are
    // rendered inside that output, the proxies' files as plain values, so a new client changes
    // OPA's files in `pulumi preview` and nothing else.
    const input = platformRenderInput(config, target, configured, {});
    const proxies = renderProxyFiles(spec, input);
    const policy = keyHashes.apply((hashes) => renderPolicyFiles(spec, { ...input, keyHashes: hashes }));
    this.policyRevision = policy.apply((r) => r.policyRevision);

    const opa = new PolicyEngine(`${name}-opa`, { target, image: images.opa, files: policy.apply((r) => r.opa), registryToken }, { parent: this });
    const agentd = new Agentd(
      `${name}-agentd`,
      {
        target,
        image: images.agentd,
        jwks,
        gatewayToken,
        registryToken,
        sandboxTiers: Object.keys(spec.sandboxTiers),
        logLevel: config.agentd.logLevel,
        defaultTtlSeconds: config.agentd.defaultTtlSeconds,
        maxTtlSeconds: config.agentd.maxTtlSeconds,
        retentionDays: config.agentd.retentionDays,
        retentionIntentsPerSandbox: config.agentd.retentionIntentsPerSandbox,
        maxActiveSandboxesPerClient: config.agentd.maxActiveSandboxesPerClient,
      },
      { parent: this },
    );
    const egressSecrets: Record<string, pulumi.Output<string>> = { [JWKS_FILE]: jwks };
    for (const [id, value] of Object.entries(args.credentials)) egressSecrets[`credentials/${credentialValueFile(id)}`] = pulumi.secret(value);
    const egress = new Egress(
      `${name}-egress`,
      {
        target,
        image: images.envoy,
        replicas: config.egress.replicas,
        secretFiles: egressSecrets,
        files: config.egress.caCertificates ? { ...proxies.egress, [EGRESS_CA_FILE]: config.egress.caCertificates } : proxies.egress,
      },
      { parent: this },
    );
    const gatewaySecrets: Record<string, pulumi.Output<string>> = { [SECRET_FILES.gatewayToken]: gatewayToken };
    if (config.gateway.tls?.source === 'config') {
      if (!args.gatewayTls) throw new Error('the stack config asks for TLS from config, but no certificate was passed to the Platform');
      gatewaySecrets[SECRET_FILES.tlsCertificate] = pulumi.secret(args.gatewayTls.certificate);
      gatewaySecrets[SECRET_FILES.tlsPrivateKey] = pulumi.secret(args.gatewayTls.privateKey);
    }
    const gateway = new Gateway(
      `${name}-gateway`,
      {
        target,
        image: images.envoy,
        replicas: config.gateway.replicas,
        publishedPort: config.gateway.port,
        files: proxies.gateway,
        secretFiles: gatewaySecrets,
        ...(config.gateway.tls?.source === 'secret' ? { tlsSecretName: config.gateway.tls.secretName } : {}),
      },
      { parent: this },
    );

    if (config.monitoring.enabled) {
      this.monitoring = new Monitoring(
        `${name}-monitoring`,
        {
          target,
          spec,
          ...(args.dockerPrefix ? { dockerPrefix: args.dockerPrefix } : {}),
          namespace: config.kubernetes.namespace,
          grafanaHostPort: config.monitoring.grafanaPort,
          prometheusHostPort: config.monitoring.prometheusPort,
        },
        { parent: this },
      );
    }
    target.connect?.();

    const scheme = config.gateway.tls ? 'https' : 'http';
    this.gatewayUrl = gateway.endpoint.apply((e) => `${scheme}://${e}`);
    this.grpcEndpoint = gateway.endpoint;
    if (gateway.nodePort) this.gatewayNodePort = gateway.nodePort;
    this.contentHashes = pulumi.all({ gateway: gateway.contentHash, egress: egress.contentHash, opa: opa.contentHash, agentd: agentd.contentHash });
    this.registerOutputs({
      gatewayUrl: this.gatewayUrl,
      grpcEndpoint: this.grpcEndpoint,
      apiKeys: this.apiKeys,
      policyRevision: this.policyRevision,
      contentHashes: this.contentHashes,
      ...(this.gatewayNodePort ? { gatewayNodePort: this.gatewayNodePort } : {}),
      ...(this.monitoring ? { grafanaUrl: this.monitoring.grafanaUrl, prometheusUrl: this.monitoring.prometheusUrl } : {}),
    });
  }
}
