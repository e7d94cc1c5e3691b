// The platform's services as planned workloads (gateway, egress, OPA, its bundle server, agentd), and where
// each finds the others on a target. Pure: planPlatform composes these with the monitoring
// overlay; `npm run render` and the goldens see exactly what a deploy ships.

import { ENV, HEALTH_PATH, READY_PATH } from '../../agentd/src/contract.ts';
import type { StackConfig } from '../config.ts';
import { DIRS, PORTS, RUN_AS_USER, SECRET_FILES, WORKLOADS } from '../layout.ts';
import { DEFAULT_PROXY_LIMITS, envoyArgs } from './envoy/common.ts';
import { credentialValueFile } from './envoy/egress.ts';
import { OPA_MASK_FILE, OPA_MEMORY_MIB, opaRunArgs, opaRuntimeEnv } from './opa.ts';
import { EGRESS_SDS_SUBDIR, ENVOY_CONFIG_FILE, GATEWAY_SDS_FILES, OPA_CONFIG_FILE, type PlatformRenderInput } from './platform.ts';
import type { Endpoint, PlannedWorkload, SecretRef, WorkloadFiles } from './types.ts';
import type { PolicySpec } from '../../policy/spec.ts';
import { REDIS_CONFIG_FILE, rateLimitServiceEnv, redisConfig, renderRateLimitServiceFiles } from './ratelimit.ts';

/** File name of the extra CA certificates in the egress config directory. */
const EGRESS_CA_FILE = 'upstream-ca.pem';
const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/**
 * Where each workload finds the others, from the stack config and a target's addressing: the
 * render input but for what only a deploy makes (the API keys' hashes, the bundle signer). Pure.
 */
export function platformRenderInput(
  config: StackConfig,
  address: (workload: string, port: number) => Endpoint,
  configuredCredentials: readonly string[],
): Omit<PlatformRenderInput, 'keyHashes' | 'bundleSigner'> {
  const any = (port: number) => ({ host: '0.0.0.0', port });
  const tls = config.gateway.tls;
  // The certificate: secret files the platform writes, or the keys of a mounted TLS Secret.
  const tlsDir = tls?.source === 'secret' ? DIRS.gatewayTlsSecret : DIRS.gatewayLiveSecrets;
  const agentdHttp = address(WORKLOADS.agentd, PORTS.agentdHttp);
  const bundles = address(WORKLOADS.bundles, PORTS.bundles);
  const rateLimitService = (proxy: 'gateway' | 'egress') =>
    config.rateLimits.mode === 'global'
      ? { rateLimitService: { endpoint: address(WORKLOADS.ratelimit, PORTS.rateLimitGrpc), whenUnavailable: config.rateLimits.whenUnavailable[proxy] } }
      : {};
  return {
    gateway: {
      listen: { traffic: any(PORTS.gateway), adminPort: PORTS.envoyAdmin, stats: any(PORTS.envoyStats) },
      agentdHttp,
      agentdGrpc: address(WORKLOADS.agentd, PORTS.agentdGrpc),
      opa: address(WORKLOADS.opa, PORTS.opaGrpc),
      ...rateLimitService('gateway'),
      maxRequestBytes: config.gateway.maxRequestBytes,
      upstreamTimeoutSeconds: config.gateway.upstreamTimeoutSeconds,
      agentdTokenSdsFile: `${DIRS.gatewayLive}/${GATEWAY_SDS_FILES.agentdToken}`,
      // A mounted TLS Secret (cert-manager renews it) is swapped in place like a live directory.
      ...(tls ? { tls: { sdsFile: `${DIRS.gatewayLive}/${GATEWAY_SDS_FILES.tls}` } } : {}),
      limits: DEFAULT_PROXY_LIMITS,
    },
    gatewaySecrets: {
      agentdTokenFile: `${DIRS.gatewayLiveSecrets}/${SECRET_FILES.gatewayToken}`,
      ...(tls ? { tls: { certificateChain: `${tlsDir}/${SECRET_FILES.tlsCertificate}`, privateKey: `${tlsDir}/${SECRET_FILES.tlsPrivateKey}` } } : {}),
    },
    egress: {
      listen: { traffic: any(PORTS.egress), adminPort: PORTS.envoyAdmin, stats: any(PORTS.envoyStats) },
      opa: address(WORKLOADS.opa, PORTS.opaGrpc),
      ...rateLimitService('egress'),
      jwksFile: `${DIRS.secrets}/${SECRET_FILES.jwks}`,
      sdsDir: `${DIRS.egressLive}/${EGRESS_SDS_SUBDIR}`,
      credentialDir: DIRS.egressLiveSecrets,
      caBundleFile: config.egress.caCertificates ? `${DIRS.egress}/${EGRESS_CA_FILE}` : SYSTEM_CA_BUNDLE,
      upstreams: config.egress.upstreams,
      configuredCredentials,
      limits: DEFAULT_PROXY_LIMITS,
    },
    opa: {
      grpc: { host: '0.0.0.0', port: PORTS.opaGrpc },
      bundle: { url: `http://${bundles.host}:${bundles.port}` },
      registry: { url: `http://${agentdHttp.host}:${agentdHttp.port}`, tokenFile: `${DIRS.secrets}/${SECRET_FILES.registryToken}` },
    },
    bundles: { listen: { traffic: any(PORTS.bundles), adminPort: PORTS.envoyAdmin, stats: any(PORTS.envoyStats) }, configDir: DIRS.bundles },
    live: {
      gateway: { dir: DIRS.gatewayLive, secretDir: DIRS.gatewayLiveSecrets },
      egress: { dir: DIRS.egressLive, secretDir: DIRS.egressLiveSecrets },
    },
  };
}

/** How long a stopping proxy keeps serving while Kubernetes takes it out of its Service's endpoints. */
const PROXY_DRAIN_SECONDS = 5;

const envoyPorts = (traffic: number) =>
  [
    { name: 'http', port: traffic, protocol: 'http' },
    { name: 'stats', port: PORTS.envoyStats, protocol: 'http' },
  ] as const;

/** The gateway: the only workload published outside the platform. */
export function gatewayWorkload(config: StackConfig, files: WorkloadFiles, liveFiles: WorkloadFiles): PlannedWorkload {
  const tls = config.gateway.tls;
  // Live: its token to agentd and its certificate rotate without a restart.
  const liveSecrets: Record<string, SecretRef> = { [SECRET_FILES.gatewayToken]: { generated: 'gateway-token' } };
  if (tls?.source === 'config') {
    liveSecrets[SECRET_FILES.tlsCertificate] = { gatewayTls: 'certificate' };
    liveSecrets[SECRET_FILES.tlsPrivateKey] = { gatewayTls: 'privateKey' };
  }
  return {
    name: WORKLOADS.gateway,
    image: 'envoy',
    args: envoyArgs(`${DIRS.gateway}/${ENVOY_CONFIG_FILE}`),
    env: {},
    configDir: DIRS.gateway,
    files,
    secretDir: DIRS.secrets,
    secretFiles: {},
    live: { dir: DIRS.gatewayLive, files: liveFiles, secretDir: DIRS.gatewayLiveSecrets, secretFiles: liveSecrets },
    ...(tls?.source === 'secret' ? { externalSecrets: [{ secretName: tls.secretName, mountPath: DIRS.gatewayTlsSecret }] } : {}),
    ports: envoyPorts(PORTS.gateway),
    health: { port: PORTS.envoyStats, path: '/ready' },
    publish: { port: PORTS.gateway, hostPort: config.gateway.port },
    drainSeconds: PROXY_DRAIN_SECONDS,
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 256 },
    replicas: config.gateway.replicas,
  };
}

/** The egress proxy: the only workload that reaches the internet. */
export function egressWorkload(config: StackConfig, files: WorkloadFiles, liveFiles: WorkloadFiles, configuredCredentials: readonly string[]): PlannedWorkload {
  // Live: credentials rotate without a restart. The token key stays: a new one is a new deploy of agentd too.
  const liveSecrets: Record<string, SecretRef> = {};
  // At the top of the live secret directory: Envoy watches a secret file's directory for the swap.
  for (const id of configuredCredentials) liveSecrets[credentialValueFile(id)] = { credential: id };
  return {
    name: WORKLOADS.egress,
    image: 'envoy',
    args: envoyArgs(`${DIRS.egress}/${ENVOY_CONFIG_FILE}`),
    env: {},
    configDir: DIRS.egress,
    files: config.egress.caCertificates ? { ...files, [EGRESS_CA_FILE]: config.egress.caCertificates } : files,
    secretDir: DIRS.secrets,
    secretFiles: { [SECRET_FILES.jwks]: { generated: 'jwks' } },
    live: { dir: DIRS.egressLive, files: liveFiles, secretDir: DIRS.egressLiveSecrets, secretFiles: liveSecrets },
    ports: envoyPorts(PORTS.egress),
    health: { port: PORTS.envoyStats, path: '/ready' },
    drainSeconds: PROXY_DRAIN_SECONDS,
    internet: true,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 256 },
    replicas: config.egress.replicas,
  };
}

/** OPA: REST API on loopback only; health and metrics on the diagnostic port. `files` lack the bundle (PlatformPlan.bundle). */
export function policyEngineWorkload(files: WorkloadFiles): PlannedWorkload {
  return {
    name: WORKLOADS.opa,
    image: 'opa',
    args: opaRunArgs({
      apiAddr: `127.0.0.1:${PORTS.opaApi}`,
      diagnosticAddr: `0.0.0.0:${PORTS.opaDiagnostic}`,
      configFile: `${DIRS.opa}/${OPA_CONFIG_FILE}`,
      maskFile: `${DIRS.opa}/${OPA_MASK_FILE}`,
      verificationKeyFile: `${DIRS.secrets}/${SECRET_FILES.policyVerificationKey}`,
    }),
    env: opaRuntimeEnv(OPA_MEMORY_MIB),
    configDir: DIRS.opa,
    files,
    secretDir: DIRS.secrets,
    secretFiles: {
      [SECRET_FILES.registryToken]: { generated: 'registry-token' },
      [SECRET_FILES.policyVerificationKey]: { generated: 'policy-verification-key' },
    },
    ports: [
      { name: 'grpc', port: PORTS.opaGrpc, protocol: 'http2' },
      { name: 'diagnostic', port: PORTS.opaDiagnostic, protocol: 'http' },
    ],
    // Ready once every bundle is active; alive while the server answers, bundles or not.
    health: { port: PORTS.opaDiagnostic, path: '/health?bundles' },
    liveness: { port: PORTS.opaDiagnostic, path: '/health' },
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: OPA_MEMORY_MIB },
    replicas: 1,
  };
}

/**
 * The bundle server: serves OPA its policy bundle, so that a policy change replaces this
 * workload and never OPA (components/render/envoy/bundles.ts). Its files depend on the API keys
 * and are rendered at deploy time (PlatformPlan.bundleServer); the plan holds none.
 */
export function bundleServerWorkload(): PlannedWorkload {
  return {
    name: WORKLOADS.bundles,
    image: 'envoy',
    args: envoyArgs(`${DIRS.bundles}/${ENVOY_CONFIG_FILE}`),
    env: {},
    configDir: DIRS.bundles,
    files: {},
    secretDir: DIRS.secrets,
    secretFiles: {},
    ports: envoyPorts(PORTS.bundles),
    health: { port: PORTS.envoyStats, path: '/ready' },
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 250, memoryMiB: 128 },
    replicas: 1,
  };
}

/**
 * Envoy's rate-limit service (global rate limits): the proxies' checks, counted in Redis. Two
 * replicas when a proxy has more than one, so that one restarting stops no limit; it keeps no
 * state of its own.
 */
export function rateLimitServiceWorkload(spec: PolicySpec, config: StackConfig, address: (workload: string, port: number) => Endpoint): PlannedWorkload {
  const redis = address(WORKLOADS.redis, PORTS.redis);
  return {
    name: WORKLOADS.ratelimit,
    image: 'ratelimit',
    args: [],
    env: rateLimitServiceEnv({
      configDir: DIRS.ratelimit,
      grpc: { host: '0.0.0.0', port: PORTS.rateLimitGrpc },
      http: { host: '0.0.0.0', port: PORTS.rateLimitHttp },
      debugPort: PORTS.rateLimitDebug,
      redis: `${redis.host}:${redis.port}`,
    }),
    configDir: DIRS.ratelimit,
    files: renderRateLimitServiceFiles(spec),
    secretDir: DIRS.secrets,
    secretFiles: {},
    ports: [
      { name: 'grpc', port: PORTS.rateLimitGrpc, protocol: 'http2' },
      { name: 'http', port: PORTS.rateLimitHttp, protocol: 'http' },
    ],
    // Ready while it holds a Redis connection (REDIS_HEALTH_CHECK_ACTIVE_CONNECTION); alive while it listens.
    health: { port: PORTS.rateLimitHttp, path: '/healthcheck' },
    liveness: { port: PORTS.rateLimitHttp },
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 250, memoryMiB: 128 },
    replicas: config.gateway.replicas > 1 || config.egress.replicas > 1 ? 2 : 1,
    // It panics when Redis does not answer at start.
    startsAfter: redis,
  };
}

/** Redis, the rate-limit service's counters: in memory only (fixed windows of at most a day), reached by the service alone. */
export function redisWorkload(): PlannedWorkload {
  return {
    name: WORKLOADS.redis,
    image: 'redis',
    args: [`${DIRS.redis}/${REDIS_CONFIG_FILE}`],
    env: {},
    configDir: DIRS.redis,
    files: { [REDIS_CONFIG_FILE]: redisConfig('0.0.0.0', PORTS.redis) },
    secretDir: DIRS.secrets,
    secretFiles: {},
    ports: [{ name: 'redis', port: PORTS.redis, protocol: 'tcp' }],
    health: { port: PORTS.redis },
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 250, memoryMiB: 256 },
    replicas: 1,
  };
}

/** agentd: sandboxes and their intents; reaches the internet only through egress. */
export function agentdWorkload(config: StackConfig, sandboxTiers: readonly string[]): PlannedWorkload {
  const a = config.agentd;
  return {
    name: WORKLOADS.agentd,
    image: 'agentd',
    args: [],
    env: {
      [ENV.mode]: 'production',
      [ENV.httpListen]: `0.0.0.0:${PORTS.agentdHttp}`,
      [ENV.grpcListen]: `0.0.0.0:${PORTS.agentdGrpc}`,
      [ENV.egressUrl]: `http://${WORKLOADS.egress}:${PORTS.egress}`,
      [ENV.dataDir]: DIRS.agentdData,
      [ENV.tokenKeyFile]: `${DIRS.secrets}/${SECRET_FILES.jwks}`,
      [ENV.sandboxTiers]: sandboxTiers.join(','),
      [ENV.logLevel]: a.logLevel,
      [ENV.defaultTtlSeconds]: String(a.defaultTtlSeconds),
      [ENV.maxTtlSeconds]: String(a.maxTtlSeconds),
      [ENV.metricsListen]: `0.0.0.0:${PORTS.agentdMetrics}`,
      [ENV.gatewayTokenFile]: `${DIRS.secrets}/${SECRET_FILES.gatewayToken}`,
      [ENV.registryTokenFile]: `${DIRS.secrets}/${SECRET_FILES.registryToken}`,
      [ENV.retentionDays]: String(a.retentionDays),
      [ENV.retentionIntentsPerSandbox]: String(a.retentionIntentsPerSandbox),
      [ENV.maxActiveSandboxesPerClient]: String(a.maxActiveSandboxesPerClient),
    },
    configDir: '/etc/agentd/agentd',
    files: {},
    secretDir: DIRS.secrets,
    secretFiles: {
      [SECRET_FILES.jwks]: { generated: 'jwks' },
      [SECRET_FILES.gatewayToken]: { generated: 'gateway-token' },
      [SECRET_FILES.registryToken]: { generated: 'registry-token' },
    },
    ports: [
      { name: 'http', port: PORTS.agentdHttp, protocol: 'http' },
      { name: 'grpc', port: PORTS.agentdGrpc, protocol: 'http2' },
      { name: 'metrics', port: PORTS.agentdMetrics, protocol: 'http' },
    ],
    // Ready with its storage open and not draining; alive while the process answers.
    health: { port: PORTS.agentdHttp, path: READY_PATH },
    liveness: { port: PORTS.agentdHttp, path: HEALTH_PATH },
    dataVolume: { mountPath: DIRS.agentdData },
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 256 },
    replicas: 1,
  };
}
