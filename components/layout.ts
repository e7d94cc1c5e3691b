// Where things live inside the workloads, and the ports they listen on: the same on every
// target, so renderers, targets, probes and scrape configs agree by construction.
import { AGENTD_GRPC_PORT, AGENTD_HTTP_PORT, AGENTD_METRICS_PORT, CONTAINER_DATA_DIR } from '../agentd/src/contract.ts';

export const PORTS = {
  gateway: 8080,
  egress: 8443,
  /** Envoy admin, loopback only inside each proxy. */
  envoyAdmin: 9901,
  /** The stats-only listener of each proxy (/stats/prometheus, /ready). */
  envoyStats: 9902,
  opaGrpc: 9191,
  /** The bundle server (OPA's policy bundle, served to OPA only). */
  bundles: 8380,
  /** OPA's REST API, loopback only inside the OPA workload. */
  opaApi: 8181,
  /** OPA's diagnostic listener: /health and /metrics only. */
  opaDiagnostic: 8282,
  agentdHttp: AGENTD_HTTP_PORT,
  agentdGrpc: AGENTD_GRPC_PORT,
  /** agentd's metrics listener (/metrics only): what Prometheus reaches, never the API. */
  agentdMetrics: AGENTD_METRICS_PORT,
  /** Envoy's rate-limit service: gRPC (the proxies' checks) and HTTP (/healthcheck). */
  rateLimitGrpc: 8081,
  rateLimitHttp: 8082,
  /** Its debug listener, loopback only inside the workload. */
  rateLimitDebug: 6070,
  redis: 6379,
} as const;

export const DIRS = {
  gateway: '/etc/agentd/gateway',
  egress: '/etc/agentd/egress',
  opa: '/etc/agentd/opa',
  bundles: '/etc/agentd/bundles',
  ratelimit: '/etc/agentd/ratelimit',
  redis: '/etc/agentd/redis',
  secrets: '/run/secrets/agentd',
  /** Kubernetes: where the gateway mounts an existing TLS Secret (agentd:gateway.tls.secretName). */
  gatewayTlsSecret: '/run/secrets/agentd-tls',
  agentdData: CONTAINER_DATA_DIR,
  /** The proxies' live directories (PlannedWorkload.live): updated in place, watched by Envoy. */
  gatewayLive: '/etc/agentd/gateway-live',
  gatewayLiveSecrets: '/run/secrets/agentd-gateway-live',
  egressLive: '/etc/agentd/egress-live',
  egressLiveSecrets: '/run/secrets/agentd-egress-live',
} as const;

/** Workload names: also their DNS names inside the platform. */
export const WORKLOADS = {
  gateway: 'gateway',
  egress: 'egress',
  opa: 'opa',
  bundles: 'bundles',
  agentd: 'agentd',
  ratelimit: 'ratelimit',
  redis: 'redis',
} as const;

/**
 * Secret files, by name under DIRS.secrets: the token key, the per-deploy tokens that let agentd trust its
 * callers (the gateway's, sent with every API request; OPA's, for the sandbox registry), and the
 * gateway's certificate when it comes from stack config. A Kubernetes TLS Secret has the same
 * key names (tls.crt, tls.key), mounted at DIRS.gatewayTlsSecret instead.
 */
export const SECRET_FILES = {
  /** The JWKS agentd signs sandbox tokens with (and the egress proxy verifies them with). */
  jwks: 'jwks.json',
  gatewayToken: 'gateway-token',
  registryToken: 'registry-token',
  /**
   * The public key OPA verifies the policy bundle's signature with. Not secret, but made at
   * deploy time from the signing key, so it travels with OPA's other generated files.
   */
  policyVerificationKey: 'policy-verification-key.pem',
  tlsCertificate: 'tls.crt',
  tlsPrivateKey: 'tls.key',
} as const;

/** The non-root user every workload runs as. */
export const RUN_AS_USER = 10001;
