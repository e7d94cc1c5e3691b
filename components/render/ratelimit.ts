// Global rate limits (agentd:rateLimits.mode: global): the limits of the policy spec as the
// descriptors both proxies send Envoy's rate-limit service, and that service's config, from one
// typed model. Each limit is a descriptor shape (its entries, fixed or taken from OPA's answer)
// and the values it takes per tier; the proxies render the shape as rate-limit actions
// (envoy/global-ratelimit.ts), the service's config nests the same entries with each tier's
// number. Pure: the plan, the goldens and the harness call it.

import type { PolicySpec } from '../../policy/spec.ts';
import { toYaml } from './yaml.ts';
import type { WorkloadFiles } from './types.ts';

/** The rate-limit service's domains, one per proxy: their descriptors never meet. */
export const RATE_LIMIT_DOMAINS = { gateway: 'agentd-gateway', egress: 'agentd-egress' } as const;

/** Units Envoy's rate-limit service counts in (fixed windows, aligned to the clock). */
export type LimitUnit = 'second' | 'minute' | 'hour' | 'day';

/** One entry of a descriptor: a fixed value, or a value of OPA's answer (ext_authz dynamic metadata). */
export type DescriptorEntry = { readonly key: string; readonly value: string } | { readonly key: string; readonly fromAuthz: string };

/** How a descriptor is counted: every request once, a check that counts nothing, or usage charged when the stream ends. */
export type Charge = { readonly kind: 'request' } | { readonly kind: 'check' } | { readonly kind: 'usage'; readonly hitsFormat: string };

/** A family of limits sharing one descriptor shape: the limit per value of its `perValueOf` entry (the tier). */
export interface LimitShape {
  readonly entries: readonly DescriptorEntry[];
  /** The entry whose value picks the limit (always OPA's tier). */
  readonly perValueOf: string;
  /** The limit for each value of that entry; a value without one is unlimited. */
  readonly limits: Readonly<Record<string, { readonly requestsPerUnit: number; readonly unit: LimitUnit; readonly name: string }>>;
  /** How a request counts against it. (The last entry is the one each distinct value of which has its own counter: the client, the sandbox.) */
  readonly charge: Charge;
}

/** The metadata namespace the egress proxy writes an LLM response's usage to (envoy/llm-usage.ts), and its keys. */
export const LLM_USAGE_NS = 'agentd.llm';
export const LLM_USAGE_KEYS = { inputTokens: 'input_tokens', outputTokens: 'output_tokens', totalTokens: 'total_tokens', model: 'model' } as const;

/** The windows of a key's limits, in both modes (local token buckets refill over `seconds`). */
export const GATEWAY_WINDOWS = [
  { name: 'minute', unit: 'minute', seconds: 60, limit: (t: PolicySpec['rateLimitTiers'][string]) => t.requestsPerMinute },
  { name: 'hour', unit: 'hour', seconds: 3600, limit: (t: PolicySpec['rateLimitTiers'][string]) => t.requestsPerHour },
] as const;

const TOKEN_WINDOWS = [
  { name: 'hour', unit: 'hour', budget: (b: { tokensPerHour: number | null }) => b.tokensPerHour },
  { name: 'day', unit: 'day', budget: (b: { tokensPerDay: number | null }) => b.tokensPerDay },
] as const;

const limitsOf = (pairs: readonly (readonly [string, number | null, LimitUnit, string])[]): LimitShape['limits'] =>
  Object.fromEntries(pairs.filter(([, n]) => n !== null).map(([tier, n, unit, name]) => [tier, { requestsPerUnit: n as number, unit, name }]));

/** The gateway's limits: per API key, its tier's requests per minute and per hour. */
export function gatewayLimitShapes(spec: PolicySpec): LimitShape[] {
  return GATEWAY_WINDOWS.map((w) => ({
    entries: [
      { key: 'window', value: w.name },
      { key: 'tier', fromAuthz: 'tier' },
      { key: 'client', fromAuthz: 'client_id' },
    ],
    perValueOf: 'tier',
    limits: limitsOf(Object.entries(spec.rateLimitTiers).map(([tier, t]) => [tier, w.limit(t), w.unit, `requests per ${w.name} of tier ${tier}`] as const)),
    charge: { kind: 'request' },
  }));
}

/**
 * The egress proxy's limits on one service: per sandbox, its tier's requests per minute; on an
 * LLM service also its tier's token budget per hour and per day, each twice: a check that
 * counts nothing when the request arrives (refused once the budget is spent), and the usage the
 * response reported, charged when the stream ends. Apart, because the proxy checks them in two
 * filters: a refusal's x-ratelimit-* headers then name only the kind of limit that refused.
 */
export function egressLimitShapes(spec: PolicySpec, serviceId: string): { readonly requests: LimitShape[]; readonly tokens: LimitShape[] } {
  const service = spec.egressServices[serviceId];
  if (!service) throw new Error(`egressLimitShapes: unknown service ${serviceId}`);
  const tiers = Object.values(spec.sandboxTiers).filter((t) => t.services.includes(serviceId));
  const requests: LimitShape[] = [
    {
      entries: [
        { key: 'budget', value: 'requests' },
        { key: 'service', value: serviceId },
        { key: 'tier', fromAuthz: 'tier' },
        { key: 'sandbox', fromAuthz: 'sandbox_id' },
      ],
      perValueOf: 'tier',
      limits: limitsOf(tiers.map((t) => [t.id, t.requestsPerMinute, 'minute', `requests per minute to ${serviceId}`] as const)),
      charge: { kind: 'request' },
    },
  ];
  const tokens: LimitShape[] = [];
  if (!service.llmApi) return { requests, tokens };
  for (const w of TOKEN_WINDOWS) {
    const entries: DescriptorEntry[] = [
      { key: 'budget', value: 'tokens' },
      { key: 'service', value: serviceId },
      { key: 'window', value: w.name },
      { key: 'tier', fromAuthz: 'tier' },
      { key: 'sandbox', fromAuthz: 'sandbox_id' },
    ];
    const limits = limitsOf(tiers.map((t) => [t.id, t.tokenBudget ? w.budget(t.tokenBudget) : null, w.unit, `tokens per ${w.name} to ${serviceId}`] as const));
    tokens.push({ entries, perValueOf: 'tier', limits, charge: { kind: 'check' } });
    tokens.push({
      entries,
      perValueOf: 'tier',
      limits,
      charge: { kind: 'usage', hitsFormat: `%DYNAMIC_METADATA(${LLM_USAGE_NS}:${LLM_USAGE_KEYS.totalTokens})%` },
    });
  }
  return { requests, tokens };
}

/** Whether any sandbox tier has a token budget to enforce. */
export const hasTokenBudgets = (spec: PolicySpec): boolean =>
  Object.values(spec.sandboxTiers).some((t) => t.tokenBudget !== null && (t.tokenBudget.tokensPerHour !== null || t.tokenBudget.tokensPerDay !== null));

/** A level of the rate-limit service's config: a key, its value (absent: any value, each counted apart), and either a limit or deeper levels. */
interface ServiceDescriptor {
  readonly key: string;
  readonly value?: string;
  readonly rate_limit?: { readonly unit: LimitUnit; readonly requests_per_unit: number; readonly name: string };
  readonly descriptors?: ServiceDescriptor[];
}

/** Adds one limit's path to the tree, merging levels that share key and value. */
function insert(tree: ServiceDescriptor[], path: readonly { key: string; value?: string }[], limit: NonNullable<ServiceDescriptor['rate_limit']>): void {
  const [head, ...rest] = path;
  if (!head) return;
  let node = tree.find((d) => d.key === head.key && d.value === head.value);
  if (!node) {
    node = { key: head.key, ...(head.value !== undefined ? { value: head.value } : {}), ...(rest.length > 0 ? { descriptors: [] } : {}) };
    tree.push(node);
  }
  if (rest.length === 0) {
    if (node.rate_limit) throw new Error(`rate-limit descriptor ${path.map((p) => `${p.key}=${p.value ?? '*'}`).join('/')} has two limits`);
    (node as { rate_limit?: ServiceDescriptor['rate_limit'] }).rate_limit = limit;
  } else {
    insert(node.descriptors!, rest, limit);
  }
}

/** The rate-limit service's config of one domain: every shape's limits, the per-tier entry filled in, the last entry any value. */
export function serviceDomainConfig(domain: string, shapes: readonly LimitShape[]): { domain: string; descriptors: ServiceDescriptor[] } {
  const descriptors: ServiceDescriptor[] = [];
  // The check and the usage charge of a budget share their descriptor: one limit in the service.
  const seen = new Set<string>();
  for (const shape of shapes) {
    const id = JSON.stringify(shape.entries);
    if (seen.has(id)) continue;
    seen.add(id);
    for (const [tierValue, l] of Object.entries(shape.limits)) {
      const path = shape.entries.map((e, i) =>
        'value' in e
          ? { key: e.key, value: e.value }
          : e.key === shape.perValueOf
            ? { key: e.key, value: tierValue }
            : i === shape.entries.length - 1
              ? { key: e.key }
              : null,
      );
      if (path.some((p) => p === null)) throw new Error(`descriptor ${id}: only the tier and the last entry may come from OPA's answer`);
      insert(descriptors, path as { key: string; value?: string }[], { unit: l.unit, requests_per_unit: l.requestsPerUnit, name: l.name });
    }
  }
  return { domain, descriptors };
}

/** The directory (under the service's runtime root) it loads every YAML file of. */
const RATE_LIMIT_CONFIG_SUBDIR = 'config';

/** The rate-limit service's files: one config per domain, from the same shapes the proxies send. */
export function renderRateLimitServiceFiles(spec: PolicySpec): WorkloadFiles {
  const gateway = serviceDomainConfig(RATE_LIMIT_DOMAINS.gateway, gatewayLimitShapes(spec));
  const egress = serviceDomainConfig(
    RATE_LIMIT_DOMAINS.egress,
    Object.keys(spec.egressServices).flatMap((id) => {
      const { requests, tokens } = egressLimitShapes(spec, id);
      return [...requests, ...tokens];
    }),
  );
  return {
    [`${RATE_LIMIT_CONFIG_SUBDIR}/gateway.yaml`]: toYaml(gateway),
    [`${RATE_LIMIT_CONFIG_SUBDIR}/egress.yaml`]: toYaml(egress),
  };
}

/** Where the rate-limit service listens and finds its config and store. */
export interface RateLimitServiceSettings {
  /** Its config directory: the files of renderRateLimitServiceFiles are under it. */
  readonly configDir: string;
  readonly grpc: { readonly host: string; readonly port: number };
  /** /healthcheck: 200 once a config is loaded and Redis answers. */
  readonly http: { readonly host: string; readonly port: number };
  /** Its debug listener (config dump, pprof): loopback only. */
  readonly debugPort: number;
  /** Redis, host:port. */
  readonly redis: string;
}

/**
 * How long the service waits to connect to Redis, name lookup included. It panics when its first
 * connection fails, so this must cover a slow lookup on a busy node: in Kubernetes the name goes
 * through the pod's search list first (up to four names, A and AAAA, through CoreDNS), and the
 * resolver retries a lost query after 5 s. At 150 ms a pod was seen to panic on
 * "lookup redis.…: i/o timeout" and restart. It bounds no check: a connected Redis that hangs
 * has no deadline here either, and the proxies' own timeout (0.25 s) bounds every check, then
 * each does what whenUnavailable says.
 */
const REDIS_TIMEOUT = '6s';

/** The rate-limit service's environment (it takes every setting from there). */
export function rateLimitServiceEnv(s: RateLimitServiceSettings): Record<string, string> {
  const slash = s.configDir.lastIndexOf('/');
  return {
    // It loads RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY/*.yaml and reloads on change.
    RUNTIME_ROOT: s.configDir.slice(0, slash) || '/',
    RUNTIME_SUBDIRECTORY: s.configDir.slice(slash + 1),
    RUNTIME_APPDIRECTORY: RATE_LIMIT_CONFIG_SUBDIR,
    // Watch the files, not the root: a Kubernetes ConfigMap volume swaps them by a symlink.
    RUNTIME_WATCH_ROOT: 'false',
    RUNTIME_IGNOREDOTFILES: 'true',
    HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED: 'true',
    GRPC_HOST: s.grpc.host,
    GRPC_PORT: String(s.grpc.port),
    HOST: s.http.host,
    PORT: String(s.http.port),
    DEBUG_HOST: '127.0.0.1',
    DEBUG_PORT: String(s.debugPort),
    REDIS_SOCKET_TYPE: 'tcp',
    REDIS_TYPE: 'SINGLE',
    REDIS_URL: s.redis,
    REDIS_TIMEOUT,
    REDIS_HEALTH_CHECK_ACTIVE_CONNECTION: 'true',
    USE_STATSD: 'false',
    // Without a stats sink it would print every stat to its log every 10 s.
    DISABLE_STATS: 'true',
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'warn',
  };
}

/** Redis's config file name, in its config directory. */
export const REDIS_CONFIG_FILE = 'redis.conf';

/**
 * Redis as the counters' store: in memory only (windows of at most a day), nothing written to
 * disk (its root is read-only), no password: only the rate-limit service may reach it (the
 * plan's network). A file, not arguments: `save ""` cannot be passed as an empty argument to
 * every runtime.
 */
export function redisConfig(bind: string, port: number): string {
  return [
    `bind ${bind}`,
    `port ${port}`,
    'protected-mode no',
    'save ""',
    'appendonly no',
    // Counters carry a TTL (their window): under memory pressure the nearest to expiry go first.
    'maxmemory-policy volatile-ttl',
    '',
  ].join('\n');
}
