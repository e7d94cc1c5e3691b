// Alert rules for Prometheus, built from the same query catalog as the dashboards. Every rule
// has a promtool unit test with a series that fires it and one that leaves it quiet
// (test/monitoring/alert-cases.ts). Annotations only interpolate labels (never $value), so the
// text an operator reads is stable and testable.

import type { PolicySpec } from '../../../policy/spec.ts';
import { JOBS } from './prometheus.ts';
import { oneOf, selector } from './promql.ts';
import { egressServices, opa, perProxy, proxy, up } from './queries.ts';
import { ENVOY_LABELS, UP } from './sources.ts';

/** Every alert, by name. */
export const ALERT_NAMES = [
  'GatewayHigh5xxRatio',
  'AuthorizationDenialsSpike',
  'OpaDown',
  'PolicyBundleRefused',
  'DecisionLogsLost',
  'ExtAuthzErrors',
  'EgressUpstreamErrors',
  'RateLimitedRatioHigh',
  'AgentdDown',
  'ProxyDown',
] as const;
export type AlertName = (typeof ALERT_NAMES)[number];

/** Thresholds and hold times; the docs and the promtool cases read them from here. */
export const ALERT_THRESHOLDS = {
  /** Window of every rate in the rules. */
  window: '5m',
  gateway5xxRatio: 0.05,
  deniedRatio: 0.25,
  /** Denials per second below which a high ratio is not a spike (a handful of bad calls). */
  deniedMinRate: 0.2,
  extAuthzErrorRatio: 0.01,
  egress5xxRatio: 0.1,
  rateLimitedRatio: 0.1,
} as const;

export type Severity = 'critical' | 'warning';

export interface AlertRule {
  readonly alert: AlertName;
  readonly expr: string;
  readonly for: string;
  readonly labels: { readonly severity: Severity; readonly component: string };
  readonly annotations: { readonly summary: string; readonly description: string };
}

export interface RuleGroup {
  readonly name: string;
  readonly rules: readonly AlertRule[];
}

export interface RuleFile {
  readonly groups: readonly RuleGroup[];
}

const ALERT_GROUP = 'agentd-platform';

const pct = (x: number) => `${Math.round(x * 1000) / 10}%`;

/** The alert rules (serialize with toYaml into PROMETHEUS_RULES_FILE). */
export function renderAlertRules(spec: PolicySpec): RuleFile {
  const T = ALERT_THRESHOLDS;
  const w = T.window;
  const prefix = `{{ $labels.${ENVOY_LABELS.extAuthzPrefix} }}`;
  const rules: Record<AlertName, Omit<AlertRule, 'alert'>> = {
    GatewayHigh5xxRatio: {
      expr: `${proxy.errorRatio('gateway', w)} > ${T.gateway5xxRatio}`,
      for: '5m',
      labels: { severity: 'critical', component: 'gateway' },
      annotations: {
        summary: 'The gateway answers 5xx to many requests',
        description: `Over ${pct(T.gateway5xxRatio)} of the gateway's responses were 5xx over ${w}: agentd failing or unreachable, or OPA not answering (see ExtAuthzErrors).`,
      },
    },
    AuthorizationDenialsSpike: {
      expr: `${perProxy.authzRatio('denied', w)} > ${T.deniedRatio} and ${perProxy.authz('denied', w)} > ${T.deniedMinRate}`,
      for: '5m',
      labels: { severity: 'warning', component: 'opa' },
      annotations: {
        summary: `Many requests denied by policy (${prefix})`,
        description: `Over ${pct(T.deniedRatio)} of the authorization checks of ${prefix} were denied over ${w}, at more than ${T.deniedMinRate}/s: a client with a wrong or disabled key, a sandbox probing services it may not call, or a policy change that denies legitimate traffic.`,
      },
    },
    OpaDown: {
      expr: `${up('opa')} == 0`,
      for: '1m',
      labels: { severity: 'critical', component: 'opa' },
      annotations: {
        summary: 'OPA is down',
        description: 'Prometheus cannot scrape OPA. Both proxies fail closed: every authorized request is refused with 503 until OPA is back.',
      },
    },
    PolicyBundleRefused: {
      expr: opa.bundleRefusals(w),
      for: '0m',
      labels: { severity: 'critical', component: 'opa' },
      annotations: {
        summary: 'OPA refused a policy bundle',
        description:
          'OPA downloaded a policy bundle and did not activate it ({{ $labels.code }}: {{ $labels.message }}): a signature that does not verify (a bundle not signed with the deploy key: tampering, or a deploy that changed the key), or Rego that does not compile. The previous policy stays in force; the change did not ship.',
      },
    },
    DecisionLogsLost: {
      expr: opa.decisionLogsLost(w),
      for: '0m',
      labels: { severity: 'critical', component: 'opa' },
      annotations: {
        summary: 'OPA lost decision log entries ({{ $labels.instance }})',
        description:
          'Decisions were made (and enforced) whose decision log entries were dropped because the queue was full, or could not be written: the audit trail has a gap. OPA logs how many; a sustained rate above what one writer can mask and print needs a larger decision-log-queue or less traffic per OPA.',
      },
    },
    ExtAuthzErrors: {
      expr: `${perProxy.authzRatio('error', w)} > ${T.extAuthzErrorRatio}`,
      for: '2m',
      labels: { severity: 'critical', component: 'opa' },
      annotations: {
        summary: `OPA does not answer ${prefix}`,
        description: `Over ${pct(T.extAuthzErrorRatio)} of the authorization checks of ${prefix} got no answer from OPA over ${w} (timeout, connection refused, bad response); those requests were refused with 503.`,
      },
    },
    EgressUpstreamErrors: {
      expr: `${egressServices.errorRatio(spec, w)} > ${T.egress5xxRatio}`,
      for: '5m',
      labels: { severity: 'warning', component: 'egress' },
      annotations: {
        summary: 'External service {{ $labels.service }} fails',
        description: `Over ${pct(T.egress5xxRatio)} of the egress proxy's responses for {{ $labels.service }} were 5xx over ${w}: the service itself failing, or unreachable, or timing out.`,
      },
    },
    RateLimitedRatioHigh: {
      expr: `${perProxy.rateLimitedRatio(w)} > ${T.rateLimitedRatio}`,
      for: '10m',
      labels: { severity: 'warning', component: 'envoy' },
      annotations: {
        summary: `Many requests rate-limited ({{ $labels.${ENVOY_LABELS.rateLimitPrefix} }})`,
        description: `Over ${pct(T.rateLimitedRatio)} of the requests checked by {{ $labels.${ENVOY_LABELS.rateLimitPrefix} }} were refused with 429 over ${w}: a client or sandbox outgrew its tier, or runs away.`,
      },
    },
    AgentdDown: {
      expr: `${up('agentd')} == 0`,
      for: '1m',
      labels: { severity: 'critical', component: 'agentd' },
      annotations: {
        summary: 'agentd is down',
        description: 'Prometheus cannot scrape agentd: the API behind the gateway is unavailable and no intent runs.',
      },
    },
    ProxyDown: {
      expr: `${selector(UP, [oneOf('job', [JOBS.gateway, JOBS.egress])])} == 0`,
      for: '1m',
      labels: { severity: 'critical', component: 'envoy' },
      annotations: {
        summary: 'The {{ $labels.job }} proxy is down',
        description: "Prometheus cannot scrape the {{ $labels.job }} Envoy's stats listener: the proxy is down or unreachable.",
      },
    },
  };
  return {
    groups: [{ name: ALERT_GROUP, rules: ALERT_NAMES.map((alert) => ({ alert, ...rules[alert] })) }],
  };
}
