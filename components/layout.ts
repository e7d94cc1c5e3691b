// Where things live inside the workloads, and the ports they listen on: the same on every
// target, so renderers, targets, probes and scrape configs agree by construction.
import { AGENTD_GRPC_PORT, AGENTD_HTTP_PORT } from '../agentd/src/contract.ts';

export const PORTS = {
  gateway: 8080,
  gatewayTls: 8444,
  egress: 8443,
  /** Envoy admin, loopback only inside each proxy. */
  envoyAdmin: 9901,
  /** The stats-only listener of each proxy (/stats/prometheus, /ready). */
  envoyStats: 9902,
  opaGrpc: 9191,
  /** OPA's REST API, loopback only inside the OPA workload. */
  opaApi: 8181,
  /** OPA's diagnostic listener: /health and /metrics only. */
  opaDiagnostic: 8282,
  agentdHttp: AGENTD_HTTP_PORT,
  agentdGrpc: AGENTD_GRPC_PORT,
} as const;

export const DIRS = {
  gateway: '/etc/agentd/gateway',
  egress: '/etc/agentd/egress',
  opa: '/etc/agentd/opa',
  secrets: '/run/secrets/agentd',
  agentdData: '/data',
} as const;

/** Workload names: also their DNS names inside the platform. */
export const WORKLOADS = { gateway: 'gateway', egress: 'egress', opa: 'opa', agentd: 'agentd' } as const;

/** The non-root user every workload runs as. */
export const RUN_AS_USER = 10001;
