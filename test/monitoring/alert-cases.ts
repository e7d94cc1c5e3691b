// promtool unit tests for the alert rules: for every alert, input series that fire it and
// series that leave it quiet (close to the threshold, or noisy in ways the rule must ignore).
// Series names and labels come from the same sources as the rules; whether those names are
// the ones Envoy, OPA and agentd really export is the live test's job.
import type { PolicySpec } from '../../policy/spec.ts';
import type { AlertName, RuleFile } from '../../components/render/monitoring/alerts.ts';
import { JOBS } from '../../components/render/monitoring/prometheus.ts';
import { eq, selector } from '../../components/render/monitoring/promql.ts';
import {
  ENVOY_LABELS as L,
  ENVOY_METRICS as E,
  OPA_BUNDLE_NAME,
  OPA_CLUSTER,
  OPA_LABELS,
  OPA_METRICS,
  PROXIES,
  SERVICE_CLUSTER,
  UP,
} from '../../components/render/monitoring/sources.ts';

interface Series {
  readonly series: string;
  readonly values: string;
}

interface Case {
  readonly series: readonly Series[];
  /** When to evaluate (after the rule's `for`). */
  readonly evalTime: string;
  /** Labels of each expected alert that come from the expression (the rule's own labels are added). */
  readonly alerts: readonly Readonly<Record<string, string>>[];
}

const s = (metric: string, labels: Readonly<Record<string, string>>, values: string): Series => ({
  series: selector(
    metric,
    Object.entries(labels).map(([k, v]) => eq(k, v)),
  ),
  values,
});

const hcmXx = (prefix: string, cls: string, values: string) => s(E.downstreamRqXx, { [L.hcmPrefix]: prefix, [L.codeClass]: cls }, values);
const authz = (metric: string, proxy: 'gateway' | 'egress', values: string) =>
  s(metric, { [L.extAuthzPrefix]: PROXIES[proxy].extAuthzPrefix, [L.hcmPrefix]: proxy }, values);
const clusterXx = (cluster: string, cls: string, values: string) => s(E.upstreamRqXx, { [L.cluster]: cluster, [L.codeClass]: cls }, values);
const rl = (metric: string, proxy: 'gateway' | 'egress', values: string) => s(metric, { [L.rateLimitPrefix]: PROXIES[proxy].rateLimitPrefix }, values);
const upOf = (job: string, instance: string, values: string) => s(UP, { job, instance }, values);
const refused = (bundle: string, values: string) =>
  s(OPA_METRICS.bundleFailedLoad, { [OPA_LABELS.bundle]: bundle, code: 'bundle_error', message: 'bundle missing .signatures.json file' }, values);

/** Per minute: `0+Nx30` is a counter growing by N a minute (N/60 per second) for 30 minutes. */
const perMin = (n: number) => `0+${n}x30`;

export function alertCases(spec: PolicySpec): Record<AlertName, { fires: Case; quiet: Case }> {
  const services = Object.keys(spec.egressServices);
  return {
    GatewayHigh5xxRatio: {
      // 10% 5xx on the traffic listener (one listener, with or without TLS).
      fires: { evalTime: '15m', alerts: [{}], series: [hcmXx('gateway', '2', perMin(540)), hcmXx('gateway', '5', perMin(60))] },
      // 1% 5xx; the stats listener's own errors must not count.
      quiet: {
        evalTime: '15m',
        alerts: [],
        series: [
          hcmXx('gateway', '2', perMin(594)),
          hcmXx('gateway', '5', perMin(6)),
          hcmXx('gateway_stats', '5', perMin(600)),
          hcmXx('egress', '5', perMin(600)),
        ],
      },
    },
    AuthorizationDenialsSpike: {
      // gateway: half of the checks denied at 1/s; egress: none denied.
      fires: {
        evalTime: '15m',
        alerts: [{ [L.extAuthzPrefix]: PROXIES.gateway.extAuthzPrefix }],
        series: [
          authz(E.httpExtAuthzOk, 'gateway', perMin(60)),
          authz(E.httpExtAuthzDenied, 'gateway', perMin(60)),
          authz(E.httpExtAuthzError, 'gateway', perMin(0)),
          authz(E.httpExtAuthzOk, 'egress', perMin(600)),
          authz(E.httpExtAuthzDenied, 'egress', perMin(0)),
          authz(E.httpExtAuthzError, 'egress', perMin(0)),
        ],
      },
      // gateway: a high ratio of very few requests (0.1/s); egress: 1/s denied but only 9%.
      quiet: {
        evalTime: '15m',
        alerts: [],
        series: [
          authz(E.httpExtAuthzOk, 'gateway', perMin(3)),
          authz(E.httpExtAuthzDenied, 'gateway', perMin(6)),
          authz(E.httpExtAuthzError, 'gateway', perMin(0)),
          authz(E.httpExtAuthzOk, 'egress', perMin(600)),
          authz(E.httpExtAuthzDenied, 'egress', perMin(60)),
          authz(E.httpExtAuthzError, 'egress', perMin(0)),
        ],
      },
    },
    OpaDown: {
      fires: { evalTime: '8m', alerts: [{ job: JOBS.opa, instance: 'opa:8181' }], series: [upOf(JOBS.opa, 'opa:8181', '1 1 1 0 0 0 0 0 0 0')] },
      // One failed scrape is not an outage.
      quiet: { evalTime: '9m', alerts: [], series: [upOf(JOBS.opa, 'opa:8181', '1 1 1 0 1 1 1 1 1 1'), upOf(JOBS.agentd, 'agentd:8090', '0x10')] },
    },
    PolicyBundleRefused: {
      // The first refusal: the counter's series appears (at 1) at minute 5; `increase` alone sees nothing.
      fires: {
        evalTime: '7m',
        alerts: [{ [OPA_LABELS.bundle]: OPA_BUNDLE_NAME, code: 'bundle_error', message: 'bundle missing .signatures.json file' }],
        series: [refused(OPA_BUNDLE_NAME, '_x5 1x20')],
      },
      // Refusals long past, the sandbox registry's own (another bundle), OPA's count of a bundle not loaded yet (no code) and
      // downloads that failed (the bundle server restarting or erring: nothing was refused) do not count.
      quiet: {
        evalTime: '15m',
        alerts: [],
        series: [
          refused(OPA_BUNDLE_NAME, '3x30'),
          refused('sandboxes', '0+1x30'),
          s(OPA_METRICS.bundleFailedLoad, { [OPA_LABELS.bundle]: OPA_BUNDLE_NAME }, '_x10 1x20'),
          s(
            OPA_METRICS.bundleFailedLoad,
            {
              [OPA_LABELS.bundle]: OPA_BUNDLE_NAME,
              code: 'bundle_error',
              message: 'request failed: Get "http://bundles:8080/bundles/agentd.tar.gz": dial tcp 10.0.0.5:8080: connect: connection refused',
            },
            '_x10 1+1x20',
          ),
          s(
            OPA_METRICS.bundleFailedLoad,
            { [OPA_LABELS.bundle]: OPA_BUNDLE_NAME, code: 'bundle_error', message: 'server replied with 503 Service Unavailable' },
            '_x10 1x20',
          ),
        ],
      },
    },
    DecisionLogsLost: {
      // One OPA's queue overflowed once (3 entries dropped at minute 5); the other lost none.
      fires: {
        evalTime: '7m',
        alerts: [{ instance: 'opa-a:8282' }],
        series: [
          s(OPA_METRICS.decisionLogsDropped, { instance: 'opa-a:8282' }, '0x5 3x20'),
          s(OPA_METRICS.decisionLogsFailed, { instance: 'opa-a:8282' }, '0x25'),
          s(OPA_METRICS.decisionLogsDropped, { instance: 'opa-b:8282' }, '0x25'),
          s(OPA_METRICS.decisionLogsFailed, { instance: 'opa-b:8282' }, '0x25'),
        ],
      },
      // Drops long past (the counters flat since): quiet.
      quiet: {
        evalTime: '20m',
        alerts: [],
        series: [
          s(OPA_METRICS.decisionLogsDropped, { instance: 'opa-a:8282' }, '0x5 3x20'),
          s(OPA_METRICS.decisionLogsFailed, { instance: 'opa-a:8282' }, '0x25'),
        ],
      },
    },
    ExtAuthzErrors: {
      // egress: 9% of the checks unanswered.
      fires: {
        evalTime: '15m',
        alerts: [{ [L.extAuthzPrefix]: PROXIES.egress.extAuthzPrefix }],
        series: [
          authz(E.httpExtAuthzOk, 'egress', perMin(600)),
          authz(E.httpExtAuthzDenied, 'egress', perMin(0)),
          authz(E.httpExtAuthzError, 'egress', perMin(60)),
          authz(E.httpExtAuthzOk, 'gateway', perMin(600)),
          authz(E.httpExtAuthzDenied, 'gateway', perMin(60)),
          authz(E.httpExtAuthzError, 'gateway', perMin(0)),
        ],
      },
      // 0.1% unanswered: a blip, not an outage.
      quiet: {
        evalTime: '15m',
        alerts: [],
        series: [
          authz(E.httpExtAuthzOk, 'egress', perMin(6000)),
          authz(E.httpExtAuthzDenied, 'egress', perMin(0)),
          authz(E.httpExtAuthzError, 'egress', perMin(6)),
        ],
      },
    },
    EgressUpstreamErrors: {
      // Every service of the spec fails 20%: one alert each, labelled with the service id. OPA's
      // cluster fails too, and must not count as a service.
      fires: {
        evalTime: '15m',
        alerts: services.map((id) => ({ service: id })),
        series: [
          ...services.flatMap((id) => [clusterXx(SERVICE_CLUSTER.name(id), '2', perMin(480)), clusterXx(SERVICE_CLUSTER.name(id), '5', perMin(120))]),
          clusterXx(OPA_CLUSTER, '5', perMin(600)),
        ],
      },
      quiet: {
        evalTime: '15m',
        alerts: [],
        series: [
          ...services.flatMap((id) => [clusterXx(SERVICE_CLUSTER.name(id), '2', perMin(594)), clusterXx(SERVICE_CLUSTER.name(id), '5', perMin(6))]),
          clusterXx(OPA_CLUSTER, '5', perMin(600)),
        ],
      },
    },
    RateLimitedRatioHigh: {
      fires: {
        evalTime: '20m',
        alerts: [{ [L.rateLimitPrefix]: PROXIES.gateway.rateLimitPrefix }],
        series: [
          rl(E.rateLimitEnabled, 'gateway', perMin(600)),
          rl(E.rateLimitRateLimited, 'gateway', perMin(120)),
          rl(E.rateLimitEnabled, 'egress', perMin(600)),
          rl(E.rateLimitRateLimited, 'egress', perMin(6)),
        ],
      },
      quiet: {
        evalTime: '20m',
        alerts: [],
        series: [
          rl(E.rateLimitEnabled, 'gateway', perMin(600)),
          rl(E.rateLimitRateLimited, 'gateway', perMin(30)),
          rl(E.rateLimitEnabled, 'egress', perMin(600)),
          rl(E.rateLimitRateLimited, 'egress', perMin(30)),
        ],
      },
    },
    AgentdDown: {
      fires: { evalTime: '8m', alerts: [{ job: JOBS.agentd, instance: 'agentd:8090' }], series: [upOf(JOBS.agentd, 'agentd:8090', '1 1 0 0 0 0 0 0 0 0')] },
      quiet: { evalTime: '9m', alerts: [], series: [upOf(JOBS.agentd, 'agentd:8090', '1 1 1 0 1 1 1 1 1 1'), upOf(JOBS.opa, 'opa:8181', '0x10')] },
    },
    ProxyDown: {
      fires: {
        evalTime: '8m',
        alerts: [{ job: JOBS.egress, instance: 'egress:9902' }],
        series: [upOf(JOBS.egress, 'egress:9902', '1 0 0 0 0 0 0 0 0 0'), upOf(JOBS.gateway, 'gateway:9902', '1x10')],
      },
      quiet: {
        evalTime: '8m',
        alerts: [],
        series: [upOf(JOBS.egress, 'egress:9902', '1x10'), upOf(JOBS.gateway, 'gateway:9902', '1x10'), upOf(JOBS.agentd, 'agentd:8090', '0x10')],
      },
    },
  };
}

/** Fills `{{ $labels.x }}` as Prometheus does (annotations use nothing else; the static test checks). */
const expandLabels = (template: string, labels: Readonly<Record<string, string>>): string =>
  template.replace(/\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g, (_, k: string) => labels[k] ?? '');

/**
 * promtool's test file for `rulesFile`. `mutate` lets a test break the expectations on purpose,
 * to show promtool would notice.
 */
export function promtoolTests(
  spec: PolicySpec,
  rules: RuleFile,
  rulesFile: string,
  mutate?: (name: AlertName, kind: 'fires' | 'quiet', c: Case) => Case,
): object {
  const byName = new Map(rules.groups.flatMap((g) => g.rules).map((r) => [r.alert, r]));
  const tests = Object.entries(alertCases(spec)).flatMap(([name, cases]) =>
    (['fires', 'quiet'] as const).map((kind) => {
      const rule = byName.get(name as AlertName);
      if (!rule) throw new Error(`no rule named ${name}`);
      const c = mutate ? mutate(name as AlertName, kind, cases[kind]) : cases[kind];
      return {
        name: `${name} ${kind}`,
        interval: '1m',
        input_series: c.series,
        alert_rule_test: [
          {
            eval_time: c.evalTime,
            alertname: name,
            exp_alerts: c.alerts.map((exprLabels) => {
              const labels = { ...exprLabels, ...rule.labels };
              return {
                exp_labels: labels,
                exp_annotations: Object.fromEntries(Object.entries(rule.annotations).map(([k, v]) => [k, expandLabels(v, labels)])),
              };
            }),
          },
        ],
      };
    }),
  );
  return { rule_files: [rulesFile], evaluation_interval: '1m', tests };
}
