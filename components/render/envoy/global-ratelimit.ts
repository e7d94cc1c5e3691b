// The proxies' side of global rate limits: Envoy's ratelimit filter asking the rate-limit
// service, and the rate-limit actions that build the descriptors of the shapes in
// ../ratelimit.ts (the service's config is rendered from the same shapes).

import type { WhenLimiterUnavailable } from '../../config.ts';
import type { DescriptorEntry, LimitShape } from '../ratelimit.ts';
import { cluster, fromAuthz, type Endpoint } from './common.ts';
import { TYPE, ext, typed, type Cluster, type RateLimit, type RateLimitAction, type TypedConfig, type TypedExtension } from './model.ts';

const RATE_LIMIT_CLUSTER = 'ratelimit';

/** The egress proxy's second ratelimit filter, for the token budgets (its name keys its per-route config). */
export const TOKEN_BUDGET_FILTER = 'agentd.filters.http.token_budget';

/** Where a proxy finds the rate-limit service, and what it does while the service cannot answer. */
export interface RateLimitServiceInput {
  readonly endpoint: Endpoint;
  readonly whenUnavailable: WhenLimiterUnavailable;
}

/**
 * How long a proxy waits for the rate-limit service. A check is one Redis round trip; past this
 * the request is treated as the service being down (allowed or refused per whenUnavailable).
 */
const RATE_LIMIT_TIMEOUT = '0.25s';

/**
 * The ratelimit filter: one call to the service per request with the descriptors of its virtual
 * host, x-ratelimit-* headers, RESOURCE_EXHAUSTED for gRPC, and 503 (flag RLSE) when the
 * service cannot answer and the limit fails closed.
 */
export function globalRateLimitFilter(opts: { statPrefix: string; domain: string; whenUnavailable: WhenLimiterUnavailable; name?: string }): TypedExtension {
  return ext(opts.name ?? 'envoy.filters.http.ratelimit', TYPE.rateLimit, {
    domain: opts.domain,
    stat_prefix: opts.statPrefix,
    request_type: 'both',
    timeout: RATE_LIMIT_TIMEOUT,
    failure_mode_deny: opts.whenUnavailable === 'deny',
    status_on_error: { code: 503 },
    enable_x_ratelimit_headers: 'DRAFT_VERSION_03',
    rate_limited_as_resource_exhausted: true,
    rate_limit_service: { grpc_service: { envoy_grpc: { cluster_name: RATE_LIMIT_CLUSTER } }, transport_api_version: 'V3' },
  });
}

/**
 * A virtual host's (or route's) limits, as the ratelimit filter's per-route config. Not the
 * route table's own `rate_limits`: Envoy's router builds those without hits_addend, so a budget
 * check would count one hit and a usage charge one hit, whatever they say.
 */
export const globalRateLimits = (shapes: readonly LimitShape[]): TypedConfig =>
  typed(TYPE.rateLimitPerRoute, { vh_rate_limits: 'IGNORE', rate_limits: rateLimitActions(shapes) });

/** The route-level config that keeps a route (health, readiness) out of its virtual host's limits. */
export const globalRateLimitIgnored = (): TypedConfig => globalRateLimits([]);

export const rateLimitServiceCluster = (at: Endpoint): Cluster => cluster(RATE_LIMIT_CLUSTER, at, { http2: true });

function action(e: DescriptorEntry): RateLimitAction {
  return 'value' in e ? { generic_key: { descriptor_key: e.key, descriptor_value: e.value } } : fromAuthz(e.key, e.fromAuthz);
}

/**
 * The rate-limit actions of the shapes: each entry an action (a fixed generic key, or OPA's
 * answer; a request without that answer sends no descriptor), and the charge as hits_addend.
 */
export function rateLimitActions(shapes: readonly LimitShape[]): RateLimit[] {
  return shapes.map((s) => ({
    actions: s.entries.map(action),
    ...(s.charge.kind === 'check' ? { hits_addend: { number: 0 } } : {}),
    ...(s.charge.kind === 'usage' ? { hits_addend: { format: s.charge.hitsFormat }, apply_on_stream_done: true } : {}),
  }));
}
