// The PromQL catalog: every expression a dashboard panel or an alert rule evaluates, built from
// the names in sources.ts. Alerts and dashboards call the same functions, so the graph an
// operator opens from an alert shows exactly what the alert measured.

import type { PolicySpec } from '../../../policy/spec.ts';
import { JOBS, type Job } from './prometheus.ts';
import { eq, histogramQuantile, labelReplace, maxBy, ne, nre, oneOf, rate, ratio, re, selector, sumBy, type Matcher, type Window } from './promql.ts';
import {
  ENVOY_LABELS as L,
  ENVOY_METRICS as E,
  OPA_BUNDLE_NAME,
  OPA_CLUSTER,
  OPA_LABELS,
  OPA_METRICS,
  PROXIES,
  SERVICE_CLUSTER,
  TOKEN_LABELS as T,
  UP,
  agentdLabel,
  agentdMetric,
  type ProxyName,
} from './sources.ts';

/** ext_authz outcomes: allowed, denied by policy, or no answer from OPA (refused: fail closed). */
export type AuthzResult = 'ok' | 'denied' | 'error';
const HTTP_AUTHZ: Readonly<Record<AuthzResult, string>> = { ok: E.httpExtAuthzOk, denied: E.httpExtAuthzDenied, error: E.httpExtAuthzError };
const CLUSTER_AUTHZ: Readonly<Record<AuthzResult, string>> = { ok: E.clusterExtAuthzOk, denied: E.clusterExtAuthzDenied, error: E.clusterExtAuthzError };

const hcm = (p: ProxyName): Matcher => re(L.hcmPrefix, PROXIES[p].hcmPrefixRegex);
const authzOf = (p: ProxyName): Matcher => eq(L.extAuthzPrefix, PROXIES[p].extAuthzPrefix);
const bothAuthz = (): Matcher => oneOf(L.extAuthzPrefix, [PROXIES.gateway.extAuthzPrefix, PROXIES.egress.extAuthzPrefix]);
const rateLimitOf = (p: ProxyName): Matcher => eq(L.rateLimitPrefix, PROXIES[p].rateLimitPrefix);
const bothRateLimits = (): Matcher => oneOf(L.rateLimitPrefix, [PROXIES.gateway.rateLimitPrefix, PROXIES.egress.rateLimitPrefix]);
const class5 = (): Matcher => eq(L.codeClass, '5');
const clusterOf = (serviceId: string): Matcher => eq(L.cluster, SERVICE_CLUSTER.name(serviceId));
const serviceClusters = (spec: PolicySpec): Matcher => oneOf(L.cluster, Object.keys(spec.egressServices).map(SERVICE_CLUSTER.name));
/** Adds a `service` label (the egress service id) recovered from the cluster name. */
const withService = (expr: string) => labelReplace(expr, 'service', L.cluster, SERVICE_CLUSTER.idRegex);

/** Requests through a proxy: rates and ratios of its traffic listener(s). */
export const proxy = {
  /** Responses per second by class (`envoy_response_code_class`: 2 for 2xx, ...). */
  responsesByClass: (p: ProxyName, w: Window) => sumBy([L.codeClass], rate(selector(E.downstreamRqXx, [hcm(p)]), w)),
  /** Responses per second. */
  responses: (p: ProxyName, w: Window) => sumBy([], rate(selector(E.downstreamRqXx, [hcm(p)]), w)),
  /** Share of responses that were 5xx. */
  errorRatio: (p: ProxyName, w: Window) =>
    ratio(sumBy([], rate(selector(E.downstreamRqXx, [hcm(p), class5()]), w)), sumBy([], rate(selector(E.downstreamRqXx, [hcm(p)]), w))),
  /** Request duration quantile, milliseconds (first byte in to last byte out). */
  latencyMs: (p: ProxyName, q: number, w: Window) => histogramQuantile(q, E.downstreamRqTimeBucket, [hcm(p)], w),
  /** ext_authz checks per second with this result. */
  authz: (p: ProxyName, result: AuthzResult, w: Window) => sumBy([], rate(selector(HTTP_AUTHZ[result], [authzOf(p)]), w)),
  /** Requests refused by the local rate limit, per second. */
  rateLimited: (p: ProxyName, w: Window) => sumBy([], rate(selector(E.rateLimitRateLimited, [rateLimitOf(p)]), w)),
  /** Requests the local rate limit checked, per second. */
  rateLimitChecked: (p: ProxyName, w: Window) => sumBy([], rate(selector(E.rateLimitEnabled, [rateLimitOf(p)]), w)),
};

/** Both proxies at once, by their filter's stat prefix (for alerts that fire per proxy). */
export const perProxy = {
  authz: (result: AuthzResult, w: Window) => sumBy([L.extAuthzPrefix], rate(selector(HTTP_AUTHZ[result], [bothAuthz()]), w)),
  /** All ext_authz checks per second, per proxy. */
  authzChecks: (w: Window) => [perProxy.authz('ok', w), perProxy.authz('denied', w), perProxy.authz('error', w)].map((e) => `(${e})`).join(' + '),
  /** Share of checks with this result, per proxy. */
  authzRatio: (result: AuthzResult, w: Window) => ratio(perProxy.authz(result, w), perProxy.authzChecks(w)),
  rateLimited: (w: Window) => sumBy([L.rateLimitPrefix], rate(selector(E.rateLimitRateLimited, [bothRateLimits()]), w)),
  rateLimitChecked: (w: Window) => sumBy([L.rateLimitPrefix], rate(selector(E.rateLimitEnabled, [bothRateLimits()]), w)),
  rateLimitedRatio: (w: Window) => ratio(perProxy.rateLimited(w), perProxy.rateLimitChecked(w)),
};

/** Egress per external service: Envoy's cluster `service_<id>` and agentd's view of the same calls. */
export const egressService = {
  /** Responses per second by class. */
  responsesByClass: (id: string, w: Window) => sumBy([L.codeClass], rate(selector(E.upstreamRqXx, [clusterOf(id)]), w)),
  /** Upstream request duration quantile, milliseconds. */
  latencyMs: (id: string, q: number, w: Window) => histogramQuantile(q, E.upstreamRqTimeBucket, [clusterOf(id)], w),
  /** 5xx per second: the upstream's own and Envoy's (unreachable, reset, timeout). */
  errors5xx: (id: string, w: Window) => sumBy([], rate(selector(E.upstreamRqXx, [clusterOf(id), class5()]), w)),
  timeouts: (id: string, w: Window) => sumBy([], rate(selector(E.upstreamRqTimeout, [clusterOf(id)]), w)),
  connectFailures: (id: string, w: Window) => sumBy([], rate(selector(E.upstreamCxConnectFail, [clusterOf(id)]), w)),
  /** OPA's decisions for this service. */
  authz: (id: string, result: AuthzResult, w: Window) => sumBy([], rate(selector(CLUSTER_AUTHZ[result], [clusterOf(id), authzOf('egress')]), w)),
  /** agentd's requests to this service by response status ("timeout", "unavailable", "error" when none). */
  agentdByStatus: (id: string, w: Window) =>
    sumBy(
      [agentdLabel('egressRequestsTotal', 'status')],
      rate(selector(agentdMetric('egressRequestsTotal'), [eq(agentdLabel('egressRequestsTotal', 'service'), id)]), w),
    ),
};

/** Egress across every service of the spec, with a `service` label. */
export const egressServices = {
  responses: (spec: PolicySpec, w: Window) => sumBy(['service'], withService(rate(selector(E.upstreamRqXx, [serviceClusters(spec)]), w))),
  errors5xx: (spec: PolicySpec, w: Window) => sumBy(['service'], withService(rate(selector(E.upstreamRqXx, [serviceClusters(spec), class5()]), w))),
  latencyMs: (spec: PolicySpec, q: number, w: Window) =>
    `histogram_quantile(${q}, ${sumBy(['le', 'service'], withService(rate(selector(E.upstreamRqTimeBucket, [serviceClusters(spec)]), w)))})`,
  /** Share of each service's responses that were 5xx. */
  errorRatio: (spec: PolicySpec, w: Window) => ratio(egressServices.errors5xx(spec, w), egressServices.responses(spec, w)),
};

/** agentd, from the contract's metrics. */
export const agentd = {
  intentsByOutcome: (w: Window) => sumBy([agentdLabel('intentsTotal', 'outcome')], rate(selector(agentdMetric('intentsTotal')), w)),
  intents: (w: Window) => sumBy([], rate(selector(agentdMetric('intentsTotal')), w)),
  intentLatencySeconds: (q: number, w: Window) => histogramQuantile(q, `${agentdMetric('intentDurationSeconds')}_bucket`, [], w),
  sandboxesActive: () => sumBy([], selector(agentdMetric('sandboxesActive'))),
  egressByService: (w: Window) => sumBy([agentdLabel('egressRequestsTotal', 'service')], rate(selector(agentdMetric('egressRequestsTotal')), w)),
  httpByStatus: (w: Window) => sumBy([agentdLabel('httpRequestsTotal', 'status')], rate(selector(agentdMetric('httpRequestsTotal')), w)),
  grpcByCode: (w: Window) => sumBy([agentdLabel('grpcRequestsTotal', 'code')], rate(selector(agentdMetric('grpcRequestsTotal')), w)),
  version: () => maxBy([agentdLabel('buildInfo', 'version')], selector(agentdMetric('buildInfo'))),
};

/** The messages of bundle_failed_load_counter for a download that failed (OPA's downloader), not a refused bundle. */
const OPA_DOWNLOAD_FAILURE_MESSAGES = '(request failed|server replied with).*';

/** OPA: decisions as Envoy sees them (ext_authz over gRPC), and OPA's bundle state. */
export const opa = {
  /** Time Envoy waits for OPA's answer, milliseconds, per proxy (`job`). */
  decisionLatencyMs: (q: number, w: Window) => histogramQuantile(q, E.upstreamRqTimeBucket, [eq(L.cluster, OPA_CLUSTER)], w, ['job']),
  /** The active bundle revision (as the label `active_revision`; the value is the activation time). */
  bundleRevision: () => maxBy([OPA_LABELS.revision], selector(OPA_METRICS.lastBundleActivation, [eq(OPA_LABELS.bundle, OPA_BUNDLE_NAME)])),
  /** Seconds since the bundle was last activated. */
  bundleAgeSeconds: () => `time() - ${maxBy([], selector(OPA_METRICS.lastBundleActivation, [eq(OPA_LABELS.bundle, OPA_BUNDLE_NAME)]))} / 1e9`,
  /**
   * Policy bundles OPA refused over `w`, by refusal: a counter that grew, or one that appeared
   * (its series starts at the first refusal, so `increase` alone would miss it). OPA also counts
   * here a bundle not loaded yet (at start, with an empty `code`) and a download that failed
   * (the bundle server unreachable or answering an error: `request failed: ...`, `server replied
   * with ...`, with the same code as a refusal): neither is a refused bundle.
   */
  bundleRefusals: (w: Window) => {
    const refused = selector(OPA_METRICS.bundleFailedLoad, [
      eq(OPA_LABELS.bundle, OPA_BUNDLE_NAME),
      ne('code', ''),
      nre('message', OPA_DOWNLOAD_FAILURE_MESSAGES),
    ]);
    const by = [OPA_LABELS.bundle, 'code', 'message'];
    return `${sumBy(by, `increase(${refused}[${w}])`)} > 0 or ${sumBy(by, `${refused} unless ${refused} offset ${w}`)}`;
  },
  /** Decision log entries lost over `w` (dropped at a full queue, or not written), per OPA instance. */
  decisionLogsLost: (w: Window) =>
    `${sumBy(['instance'], `increase(${selector(OPA_METRICS.decisionLogsDropped)}[${w}])`)} + ${sumBy(['instance'], `increase(${selector(OPA_METRICS.decisionLogsFailed)}[${w}])`)} > 0`,
  /** 1 per plugin and status. */
  pluginStatus: () => maxBy([OPA_LABELS.plugin, OPA_LABELS.status], selector(OPA_METRICS.pluginStatus)),
  version: () => maxBy([OPA_LABELS.version], selector(OPA_METRICS.info)),
};

/** Prometheus' `up` for a job (1 = the last scrape succeeded). */
export const up = (job: Job) => selector(UP, [eq('job', JOBS[job])]);
/** `up` of every platform job, by job. */
export const upAll = () => maxBy(['job'], selector(UP, [oneOf('job', Object.values(JOBS))]));

/** LLM tokens the egress proxy metered, per second (OpenTelemetry GenAI labels; never per sandbox). */
export const llmTokens = {
  byServiceAndType: (w: Window) => sumBy([T.service, T.type], rate(selector(E.tokenUsage), w)),
  byModel: (w: Window) => sumBy([T.provider, T.model], rate(selector(E.tokenUsage), w)),
  byTier: (w: Window) => sumBy([T.tier], rate(selector(E.tokenUsage), w)),
};
