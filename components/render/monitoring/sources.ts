// Every name the monitoring configs depend on, in one place, and each taken from where it is
// defined: stat prefixes and cluster names from the Envoy renderers, the bundle name from the
// OPA renderer, metric names and ports from the agentd contract. Envoy's and OPA's own metric
// and label names are not defined in this repository; they are written below as observed on the
// real binaries (Envoy 1.40 with its default tag extraction, OPA 1.19), and the live monitoring
// test (test/monitoring/live.test.ts) fails when any of them stops matching a scraped series.

import { METRICS, METRICS_PATH } from '../../../agentd/src/contract.ts';
import { OPA_CLUSTER, statsListener } from '../envoy/common.ts';
import { EGRESS_EXT_AUTHZ_STAT_PREFIX, EGRESS_RATE_LIMIT_STAT_PREFIX, EGRESS_STAT_PREFIX, serviceCluster } from '../envoy/egress.ts';
import { GATEWAY_EXT_AUTHZ_STAT_PREFIX, GATEWAY_RATE_LIMIT_STAT_PREFIX, GATEWAY_STAT_PREFIX } from '../envoy/gateway.ts';
import { TOKEN_USAGE_PROMETHEUS_NAME, TOKEN_USAGE_TAGS } from '../envoy/llm-usage.ts';
import type { RouteConfiguration } from '../envoy/model.ts';
import { OPA_BUNDLE_NAME } from '../opa.ts';
import { regexLiteral } from './promql.ts';

export { METRICS, OPA_BUNDLE_NAME, OPA_CLUSTER };

/**
 * The path Prometheus scrapes on an Envoy stats listener, read from the listener's own route
 * table, so a change there moves the scrape path with it.
 */
export const ENVOY_STATS_PATH: string = (() => {
  const listener = statsListener('probe', { host: '127.0.0.1', port: 1 });
  const routeConfig = listener.filter_chains[0]?.filters[0]?.typed_config['route_config'] as RouteConfiguration | undefined;
  const path = routeConfig?.virtual_hosts[0]?.routes.find((r) => r.name === 'prometheus')?.match.path;
  if (!path) throw new Error('the Envoy stats listener has no "prometheus" route with an exact path');
  return path;
})();

/** OPA's metrics are served on its HTTP API port at this path (OPA's default, not configurable). */
export const OPA_METRICS_PATH = '/metrics';

/** agentd's metrics path, from the contract. */
export const AGENTD_METRICS_PATH = METRICS_PATH;

/** The two proxies, with the stat prefixes their renderers give each filter. */
export const PROXIES = {
  gateway: {
    /** The traffic HCM: one listener, `gateway`, with or without TLS (see renderGatewayConfig). */
    hcmPrefixRegex: regexLiteral(GATEWAY_STAT_PREFIX),
    extAuthzPrefix: GATEWAY_EXT_AUTHZ_STAT_PREFIX,
    rateLimitPrefix: GATEWAY_RATE_LIMIT_STAT_PREFIX,
  },
  egress: {
    hcmPrefixRegex: regexLiteral(EGRESS_STAT_PREFIX),
    extAuthzPrefix: EGRESS_EXT_AUTHZ_STAT_PREFIX,
    rateLimitPrefix: EGRESS_RATE_LIMIT_STAT_PREFIX,
  },
} as const;
export type ProxyName = keyof typeof PROXIES;

/** Envoy's cluster name of an egress service, and a regex that recovers the service id from it. */
export const SERVICE_CLUSTER = {
  name: serviceCluster,
  /** `service_(.+)` for `service_<id>`: built by probing serviceCluster, so a renamed scheme follows. */
  idRegex: (() => {
    const mark = '\u0000';
    const probe = serviceCluster(mark);
    const at = probe.indexOf(mark);
    if (at < 0 || probe.indexOf(mark, at + 1) >= 0) throw new Error('serviceCluster(id) must contain the id exactly once');
    return `${regexLiteral(probe.slice(0, at))}(.+)${regexLiteral(probe.slice(at + mark.length))}`;
  })(),
} as const;

/**
 * Envoy's Prometheus label names. Envoy's default tag extractors turn parts of a stat name into
 * these labels (e.g. `http.gateway.downstream_rq_5xx` becomes
 * `envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="gateway",envoy_response_code_class="5"}`).
 */
export const ENVOY_LABELS = {
  hcmPrefix: 'envoy_http_conn_manager_prefix',
  cluster: 'envoy_cluster_name',
  codeClass: 'envoy_response_code_class',
  extAuthzPrefix: 'envoy_ext_authz_prefix',
  rateLimitPrefix: 'envoy_local_http_ratelimit_prefix',
} as const;

/**
 * Envoy's metric names that dashboards and alerts use, as scraped from /stats/prometheus.
 * Durations (`*_time`) are histograms in milliseconds.
 */
export const ENVOY_METRICS = {
  /** Responses per HCM by class (`envoy_response_code_class` = 1..5). */
  downstreamRqXx: 'envoy_http_downstream_rq_xx',
  downstreamRqTotal: 'envoy_http_downstream_rq_total',
  downstreamRqTimeBucket: 'envoy_http_downstream_rq_time_bucket',
  /** ext_authz outcomes per HCM (label `envoy_ext_authz_prefix`). `error`: OPA did not answer. */
  httpExtAuthzOk: 'envoy_http_ext_authz_ok',
  httpExtAuthzDenied: 'envoy_http_ext_authz_denied',
  httpExtAuthzError: 'envoy_http_ext_authz_error',
  /** The same per route cluster (on egress: per service). */
  clusterExtAuthzOk: 'envoy_cluster_ext_authz_ok',
  clusterExtAuthzDenied: 'envoy_cluster_ext_authz_denied',
  clusterExtAuthzError: 'envoy_cluster_ext_authz_error',
  /** local_ratelimit: `enabled` counts every request checked, `rate_limited` the refused ones. */
  rateLimitEnabled: 'envoy_http_local_rate_limit_enabled',
  rateLimitRateLimited: 'envoy_http_local_rate_limit_rate_limited',
  /**
   * Responses per cluster by class. Includes replies Envoy makes for the cluster (503 when the
   * upstream cannot be reached, 504 on timeout) and ext_authz denials charged to the cluster.
   */
  upstreamRqXx: 'envoy_cluster_upstream_rq_xx',
  upstreamRqTotal: 'envoy_cluster_upstream_rq_total',
  upstreamRqTimeBucket: 'envoy_cluster_upstream_rq_time_bucket',
  upstreamRqTimeout: 'envoy_cluster_upstream_rq_timeout',
  upstreamCxConnectFail: 'envoy_cluster_upstream_cx_connect_fail',
  /**
   * LLM tokens the egress proxy metered (gen_ai.client.token.usage, a counter of tokens), by the
   * labels of TOKEN_LABELS. Rendered by the egress renderer: its name and labels come from there.
   */
  tokenUsage: TOKEN_USAGE_PROMETHEUS_NAME,
} as const;

/** The labels of ENVOY_METRICS.tokenUsage. */
export const TOKEN_LABELS = TOKEN_USAGE_TAGS;

/** OPA's own metric names (its /metrics), as scraped from OPA 1.22. */
export const OPA_METRICS = {
  /** Gauge, ns since the epoch of the last activation; label `active_revision` carries the revision. */
  lastBundleActivation: 'last_success_bundle_activation',
  bundleLoaded: 'bundle_loaded_counter',
  /**
   * Counter per bundle (`name`) and refusal (`code`, `message`): OPA counts one at each status
   * update while a bundle is refused (bad signature, parse or compile error), and with an empty
   * `code` while it has none yet (at start).
   */
  bundleFailedLoad: 'bundle_failed_load_counter',
  /** 1 per plugin (`name`) and its current `status` (OK, NOT_READY, ERROR). */
  pluginStatus: 'plugin_status_gauge',
  info: 'opa_info',
  /**
   * Counters of the ext_authz plugin's decision log queue (agentd's build; from OPA's start, at
   * 0): entries dropped because the queue was full, and queued entries that could not be written.
   */
  decisionLogsDropped: 'decision_logs_dropped_total',
  decisionLogsFailed: 'decision_logs_failed_total',
} as const;

export const OPA_LABELS = { bundle: 'name', revision: 'active_revision', plugin: 'name', status: 'status', version: 'version' } as const;

/** Prometheus' own series per scrape target. */
export const UP = 'up';

/** A metric name of the agentd contract, and its labels. */
export type AgentdMetric = keyof typeof METRICS;
export type AgentdLabel<M extends AgentdMetric> = (typeof METRICS)[M]['labels'][number];

/** The name of an agentd metric, from the contract. */
export const agentdMetric = (m: AgentdMetric): string => METRICS[m].name;

/**
 * A label of an agentd metric: the type only admits labels the contract lists for that metric,
 * so a dashboard cannot group by a label the daemon does not export.
 */
export const agentdLabel = <M extends AgentdMetric>(_metric: M, label: AgentdLabel<M>): string => label;

/**
 * The datasources Grafana is provisioned with. Their uids are fixed here, and every dashboard
 * panel and query refers to a datasource by these uids, so a dashboard never depends on what a
 * user named them.
 */
export const GRAFANA_DATASOURCES = {
  prometheus: { type: 'prometheus', uid: 'prometheus' },
  loki: { type: 'loki', uid: 'loki' },
} as const;
