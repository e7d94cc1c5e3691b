// The agentd contract: every name, port and path that something outside the daemon depends on
// (Pulumi components, Envoy config renderers, Grafana dashboards, alert rules, tests).
//
// Rules for this module: no imports (not even node:*), no side effects, only constants and
// types. The rest of the repository imports agentd through this file alone, and the daemon
// itself uses these constants, so a rename here is a rename everywhere.

/** Default listen ports. In containers the daemon listens on 0.0.0.0 at these ports. */
export const AGENTD_HTTP_PORT = 8090;
export const AGENTD_GRPC_PORT = 9500;
/** The metrics listener: /metrics only, apart from the API so a scraper never reaches the API. */
export const AGENTD_METRICS_PORT = 9464;

/** HTTP paths that infrastructure probes or scrapes. */
export const HEALTH_PATH = '/health'; // liveness: the process answers
export const READY_PATH = '/ready'; // readiness: storage is open and the daemon is not draining
export const METRICS_PATH = '/metrics'; // Prometheus text format
export const OPENAPI_PATH = '/openapi.json';
export const API_PREFIX = '/api/v1';
export const STATUS_PATH = `${API_PREFIX}/status`;
export const SANDBOXES_PATH = `${API_PREFIX}/sandboxes`;

/** Every environment variable the daemon reads (documented in agentd/README.md). */
export const ENV = {
  mode: 'AGENTD_MODE',
  httpListen: 'AGENTD_HTTP_LISTEN',
  grpcListen: 'AGENTD_GRPC_LISTEN',
  egressUrl: 'AGENTD_EGRESS_URL',
  dataDir: 'AGENTD_DATA_DIR',
  tokenKeyFile: 'AGENTD_TOKEN_KEY_FILE',
  tokenKid: 'AGENTD_TOKEN_KID',
  logLevel: 'AGENTD_LOG_LEVEL',
  sandboxTiers: 'AGENTD_SANDBOX_TIERS',
  defaultTtlSeconds: 'AGENTD_DEFAULT_TTL_SECONDS',
  maxTtlSeconds: 'AGENTD_MAX_TTL_SECONDS',
  fetchMaxBytes: 'AGENTD_FETCH_MAX_BYTES',
  fetchTimeoutMs: 'AGENTD_FETCH_TIMEOUT_MS',
  fetchMaxTimeoutMs: 'AGENTD_FETCH_MAX_TIMEOUT_MS',
  shutdownGraceMs: 'AGENTD_SHUTDOWN_GRACE_MS',
  metricsListen: 'AGENTD_METRICS_LISTEN',
  /** File holding the per-deploy secret the gateway injects (GATEWAY_TOKEN_HEADER); required in production. */
  gatewayTokenFile: 'AGENTD_GATEWAY_TOKEN_FILE',
  /** File holding the bearer token OPA presents to fetch the sandbox registry bundle; required in production. */
  registryTokenFile: 'AGENTD_REGISTRY_TOKEN_FILE',
  /** Retention: intents and ended sandboxes older than this many days are purged (0 = keep). */
  retentionDays: 'AGENTD_RETENTION_DAYS',
  /** Retention: at most this many intent records per sandbox (the oldest are purged). */
  retentionIntentsPerSandbox: 'AGENTD_RETENTION_INTENTS_PER_SANDBOX',
  /** Largest stored intent record (path + forwarded headers + metadata), in bytes: 400 above. */
  intentRecordMaxBytes: 'AGENTD_INTENT_RECORD_MAX_BYTES',
  /** Largest page a list endpoint returns, in bytes (fewer items and a cursor above). */
  pageMaxBytes: 'AGENTD_PAGE_MAX_BYTES',
  /** At most this many active sandboxes per API client. */
  maxActiveSandboxesPerClient: 'AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT',
} as const;

/**
 * Defaults of the numeric settings (README: Configuration). Deployments may size things from
 * them, e.g. the orchestrator's kill timeout above shutdownGraceMs, and the gateway's upstream
 * timeout above fetchMaxTimeoutMs.
 */
export const DEFAULTS = {
  defaultTtlSeconds: 3600,
  maxTtlSeconds: 86_400,
  fetchMaxBytes: 1024 * 1024,
  fetchTimeoutMs: 30_000,
  fetchMaxTimeoutMs: 120_000,
  shutdownGraceMs: 15_000,
  /** Storage bounds (README: Retention). */
  retentionDays: 30,
  retentionIntentsPerSandbox: 1000,
  intentRecordMaxBytes: 16_384,
  pageMaxBytes: 1024 * 1024,
  maxActiveSandboxesPerClient: 100,
  /** Development-mode defaults (production has none for these). */
  devEgressUrl: 'http://127.0.0.1:8443',
  devDataDir: 'build/agentd-dev',
} as const;

/** Largest HTTP request body agentd accepts (413 above). */
export const HTTP_BODY_LIMIT_BYTES = 2 * 1024 * 1024;

/** AGENTD_MODE values. "production" has no insecure defaults (a key file is required). */
export const MODES = ['development', 'production'] as const;
export type AgentdMode = (typeof MODES)[number];

/** Default sandbox tiers (AGENTD_SANDBOX_TIERS overrides). Policy keys its rules on these. */
export const DEFAULT_SANDBOX_TIERS = ['default', 'restricted', 'standard', 'premium', 'admin'] as const;

/** Where the data volume is mounted in the container image, and the database file name in it. */
export const CONTAINER_DATA_DIR = '/data';
export const DATABASE_FILE = 'agentd.sqlite';

/**
 * The sandbox token: a JWT (HS256) that agentd attaches to every request it sends to the egress
 * proxy. Envoy's jwt_authn verifies it with the same JWKS file agentd signs with
 * (AGENTD_TOKEN_KEY_FILE), and forwards the claims to OPA.
 */
export const SANDBOX_TOKEN_HEADER = 'x-agentd-sandbox-token';
export const TOKEN_ALGORITHM = 'HS256';
export const TOKEN_ISSUER = 'agentd';
export const TOKEN_AUDIENCE = 'agentd-egress';
export const TOKEN_CLAIMS = {
  sandboxId: 'sub',
  tier: 'tier',
  issuedAt: 'iat',
  expiresAt: 'exp',
  issuer: 'iss',
  audience: 'aud',
} as const;

/**
 * Identity the gateway forwards to agentd once OPA allowed a request (OPA's answer; the
 * gateway strips every x-agentd-* header a caller sends before any filter runs).
 *   clientId      the API client (owner of the sandboxes it creates)
 *   clientRole    its role (roles.yaml)
 *   clientScope   'all' (sees every client's sandboxes) or 'own'
 *   sandboxTiers  comma-separated sandbox tiers the role may create ('' = none)
 * In production agentd trusts these only on requests that carry GATEWAY_TOKEN_HEADER with the
 * per-deploy secret, which the gateway injects (Envoy credential_injector, from a secret file).
 */
export const IDENTITY_HEADERS = {
  clientId: 'x-agentd-client-id',
  clientRole: 'x-agentd-client-role',
  clientScope: 'x-agentd-client-scope',
  sandboxTiers: 'x-agentd-sandbox-tiers',
} as const;
export const CLIENT_SCOPES = ['all', 'own'] as const;
export type ClientScope = (typeof CLIENT_SCOPES)[number];
export const GATEWAY_TOKEN_HEADER = 'x-agentd-gateway-token';

/**
 * The sandbox registry: agentd serves the set of active sandboxes as an OPA bundle (tar.gz with
 * .manifest and sandboxes/data.json), with long polling, at this path on its HTTP port; OPA
 * fetches it with `Authorization: Bearer <registry token>`. In OPA: data.sandboxes.active is an
 * object keyed by sandbox id ({"tier": ..., "exp": epoch seconds}); a token whose sandbox is not
 * in it is refused at the egress proxy.
 */
export const REGISTRY_BUNDLE_PATH = '/internal/v1/registry/bundle.tar.gz';
export const REGISTRY_BUNDLE_ROOT = 'sandboxes';

/** Headers agentd sets on egress requests besides the token. */
export const REQUEST_ID_HEADER = 'x-request-id';

/** Capabilities an intent may use. */
export const CAPABILITIES = ['http_fetch'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** Intent outcomes (the `outcome` label of agentd_intents_total). "running" is never counted. */
export const INTENT_OUTCOMES = ['ok', 'timeout', 'egress_unavailable', 'error', 'interrupted'] as const;
export type IntentOutcome = (typeof INTENT_OUTCOMES)[number];

/** Sandbox states as reported by the API. */
export const SANDBOX_STATES = ['active', 'expired', 'terminated'] as const;
export type SandboxState = (typeof SANDBOX_STATES)[number];

/** Prometheus metric names and their labels. Dashboards and alert rules depend on these. */
export const METRICS = {
  intentsTotal: { name: 'agentd_intents_total', labels: ['capability', 'outcome'] },
  intentDurationSeconds: { name: 'agentd_intent_duration_seconds', labels: ['capability'] },
  sandboxesActive: { name: 'agentd_sandboxes_active', labels: [] },
  egressRequestsTotal: { name: 'agentd_egress_requests_total', labels: ['service', 'status'] },
  httpRequestsTotal: { name: 'agentd_http_requests_total', labels: ['route', 'method', 'status'] },
  grpcRequestsTotal: { name: 'agentd_grpc_requests_total', labels: ['method', 'code'] },
  buildInfo: { name: 'agentd_build_info', labels: ['version'] },
  /** Rows deleted by retention (table: sandboxes | intents). */
  storagePurgedRowsTotal: { name: 'agentd_storage_purged_rows_total', labels: ['table'] },
} as const;
/** prom-client's default process metrics are exported too (process_*, nodejs_*), unprefixed. */

/** gRPC: the proto root directory (in the package and next to the bundle) and the files in it. */
export const PROTO_ROOT = 'proto';
export const PROTO_FILES = {
  agentd: 'agentd/v1/agentd.proto',
  health: 'grpc/health/v1/health.proto',
} as const;
/** The same files relative to the agentd package directory (and to dist/ in the bundle). */
export const PROTO_PATHS = {
  agentd: `${PROTO_ROOT}/${PROTO_FILES.agentd}`,
  health: `${PROTO_ROOT}/${PROTO_FILES.health}`,
} as const;
export const GRPC_SERVICE = 'agentd.v1.Agentd';
/** Trailing metadata keys on gRPC errors. */
export const GRPC_ERROR_CODE_METADATA = 'agentd-error-code';
export const GRPC_ERROR_FIELD_METADATA = 'agentd-error-field';
export const GRPC_INTENT_ID_METADATA = 'agentd-intent-id';

/** http_fetch: what agentd sends to the egress proxy. */
export const HTTP_FETCH_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type HttpFetchMethod = (typeof HTTP_FETCH_METHODS)[number];
/** A service id (the Host header agentd sends to the egress proxy). */
export const SERVICE_ID_PATTERN = '^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?$';
/**
 * Caller headers agentd forwards to the egress proxy (lowercase). Any other header is dropped
 * (and reported in the intent's dropped_headers); credential and routing headers such as
 * authorization, cookie, host, proxy-*, forwarded, x-forwarded-*, x-envoy-*, x-agentd-* and
 * x-sandbox-* are rejected with a 400. agentd itself adds host, the sandbox token header,
 * x-request-id and accept-encoding: identity.
 */
export const FORWARDED_REQUEST_HEADERS = [
  'accept',
  'accept-language',
  'anthropic-beta',
  'anthropic-version',
  'cache-control',
  'content-language',
  'content-type',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-unmodified-since',
  'idempotency-key',
  'openai-beta',
  'range',
  'user-agent',
  'x-github-api-version',
] as const;
