// Pieces several dashboards share: latency quantiles, authorization outcomes, up/down stats,
// and the fields of Envoy's JSON access log that log panels parse.

import type { BASE_LOG_FIELDS } from '../../components/render/envoy/common.ts';
import type { ProxyName } from '../../components/render/monitoring/sources.ts';
import { proxy, type AuthzResult } from '../../components/render/monitoring/queries.ts';
import type { Window } from '../../components/render/monitoring/promql.ts';
import { q, type PromQuery, type Step, type ValueText } from './panels.ts';

/** The rate window of every dashboard query: Grafana picks it from the scrape interval and the resolution. */
export const W: Window = '$__rate_interval';

const QUANTILES = [0.5, 0.95, 0.99] as const;
export const pLabel = (quantile: number) => `p${Math.round(quantile * 100)}`;

/** p50, p95, p99 of a latency histogram. */
export const quantileQueries = (f: (quantile: number) => string, legendPrefix = ''): PromQuery[] =>
  QUANTILES.map((quantile) => q(f(quantile), `${legendPrefix}${pLabel(quantile)}`));

export const AUTHZ_LEGEND: Readonly<Record<AuthzResult, string>> = { ok: 'allowed', denied: 'denied', error: 'no answer (refused)' };

/** Allowed, denied, unanswered checks of one proxy. */
export const authzQueries = (p: ProxyName): PromQuery[] => (['ok', 'denied', 'error'] as const).map((r) => q(proxy.authz(p, r, W), AUTHZ_LEGEND[r]));

/** Value mappings for `up`. */
export const UP_MAPPINGS: readonly ValueText[] = [
  { value: 1, text: 'UP', color: 'green' },
  { value: 0, text: 'DOWN', color: 'red' },
];

/** Thresholds for `up`: red, green from 1. */
export const UP_THRESHOLDS: readonly Step[] = [
  { value: null, color: 'red' },
  { value: 1, color: 'green' },
];

/** Thresholds for ratios where more is worse. */
export const RATIO_THRESHOLDS = (warn: number, crit: number): Step[] => [
  { value: null, color: 'green' },
  { value: warn, color: 'orange' },
  { value: crit, color: 'red' },
];

type LogField = keyof typeof BASE_LOG_FIELDS;
/**
 * Fields of the proxies' JSON access logs that dashboards parse. Typed against the renderer's
 * BASE_LOG_FIELDS; `tier` is added per proxy (checked by the dashboard tests).
 */
export const ACCESS_LOG = {
  status: 'status' satisfies LogField,
  durationMs: 'duration_ms' satisfies LogField,
  reason: 'reason' satisfies LogField,
  tier: 'tier',
} as const;
