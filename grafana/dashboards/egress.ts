// The egress dashboard: the proxy as a whole, then one row per external service of the policy
// spec (Envoy's cluster for it and agentd's view of the same calls), then traffic per sandbox
// tier. Tiers are not a metric label (a sandbox's tier lives in its token); the egress access
// log carries the tier OPA returned, so the tier panels count log lines in Loki.

import * as units from '@grafana/grafana-foundation-sdk/units';
import type { PolicySpec } from '../../policy/spec.ts';
import { LOG_SERVICES } from '../../components/render/monitoring/alloy.ts';
import { ALERT_THRESHOLDS } from '../../components/render/monitoring/alerts.ts';
import { countBy, json, quantileOf, stream, where } from '../../components/render/monitoring/logql.ts';
import { egressService, egressServices, llmTokens, proxy, up } from '../../components/render/monitoring/queries.ts';
import { ENVOY_LABELS, METRICS } from '../../components/render/monitoring/sources.ts';
import { Board, logMetrics, q, stat, timeseries, type Dashboard } from './panels.ts';
import { ACCESS_LOG, AUTHZ_LEGEND, UP_MAPPINGS, UP_THRESHOLDS, W, authzQueries, pLabel, quantileQueries } from './shared.ts';

export function egressDashboard(spec: PolicySpec): Dashboard {
  const d = new Board({
    uid: 'agentd-egress',
    title: 'agentd / Egress',
    description: 'Sandboxes out to external APIs: per service and per sandbox tier.',
    tags: ['egress'],
  });

  d.row('Egress proxy').add(
    stat({ title: 'Egress', unit: units.NoUnit, queries: [q(up('egress'), 'up')], mappings: UP_MAPPINGS, thresholds: UP_THRESHOLDS }),
    stat({ title: 'Requests', unit: units.RequestsPerSecond, queries: [q(proxy.responses('egress', W), 'requests/s')] }),
    stat({ title: 'Rate-limited', unit: units.RequestsPerSecond, queries: [q(proxy.rateLimited('egress', W), '429/s')] }),
    stat({ title: 'Denied by policy', unit: units.RequestsPerSecond, queries: [q(proxy.authz('egress', 'denied', W), 'denied/s')] }),
    timeseries({
      title: 'Requests by service',
      description: 'Responses per second per external service (Envoy cluster), including denials charged to the service.',
      unit: units.RequestsPerSecond,
      stack: true,
      queries: [q(egressServices.responses(spec, W), '{{service}}')],
    }),
    timeseries({
      title: '5xx ratio by service',
      description: `Share of each service's responses that were 5xx. EgressUpstreamErrors fires above ${ALERT_THRESHOLDS.egress5xxRatio * 100}%.`,
      unit: units.PercentUnit,
      queries: [q(egressServices.errorRatio(spec, W), '{{service}}')],
    }),
    timeseries({
      title: 'Upstream latency p95 by service',
      unit: units.Milliseconds,
      queries: [q(egressServices.latencyMs(spec, 0.95, W), '{{service}}')],
    }),
    timeseries({
      title: 'Responses by status class (all hosts)',
      description: 'Everything the egress proxy answered, including 401 (no valid sandbox token), 404 (unknown service), 429 (rate limit).',
      unit: units.RequestsPerSecond,
      stack: true,
      queries: [q(proxy.responsesByClass('egress', W), `{{${ENVOY_LABELS.codeClass}}}xx`)],
    }),
    timeseries({ title: 'Authorization (OPA)', unit: units.RequestsPerSecond, queries: authzQueries('egress') }),
    timeseries({
      title: 'Rate limiting (per sandbox x service)',
      unit: units.RequestsPerSecond,
      queries: [q(proxy.rateLimitChecked('egress', W), 'checked'), q(proxy.rateLimited('egress', W), 'rate-limited')],
    }),
  );

  const llm = Object.values(spec.egressServices).filter((s) => s.llmApi);
  if (llm.length > 0) {
    const budgets = Object.values(spec.sandboxTiers)
      .filter((t) => t.tokenBudget)
      .map((t) => `${t.id}: ${t.tokenBudget!.tokensPerHour ?? 'unlimited'}/h, ${t.tokenBudget!.tokensPerDay ?? 'unlimited'}/day`)
      .join('; ');
    d.row('LLM tokens (gen_ai.client.token.usage)').add(
      timeseries({
        title: 'Tokens by service and type',
        description: `Tokens the LLM services (${llm.map((s) => s.id).join(', ')}) reported in their responses, as the egress proxy metered them. Budgets per sandbox and service: ${budgets}.`,
        unit: units.Short,
        stack: true,
        w: 8,
        queries: [q(llmTokens.byServiceAndType(W), '{{service}} {{gen_ai_token_type}}')],
      }),
      timeseries({
        title: 'Tokens by model',
        unit: units.Short,
        stack: true,
        w: 8,
        queries: [q(llmTokens.byModel(W), '{{gen_ai_provider_name}} {{gen_ai_response_model}}')],
      }),
      timeseries({ title: 'Tokens by sandbox tier', unit: units.Short, stack: true, w: 8, queries: [q(llmTokens.byTier(W), '{{tier}}')] }),
    );
  }

  for (const s of Object.values(spec.egressServices)) {
    const tiers = Object.values(spec.sandboxTiers)
      .filter((t) => t.services.includes(s.id))
      .map((t) => t.id);
    d.row(`Service: ${s.displayName} (${s.id})`).add(
      timeseries({
        title: `${s.id}: requests by status class`,
        description: `${s.baseUrl.scheme}://${s.baseUrl.host}; methods ${s.allowedMethods.join(', ')}; tiers ${tiers.join(', ') || 'none'}.`,
        unit: units.RequestsPerSecond,
        stack: true,
        w: 8,
        queries: [q(egressService.responsesByClass(s.id, W), `{{${ENVOY_LABELS.codeClass}}}xx`)],
      }),
      timeseries({
        title: `${s.id}: upstream latency`,
        description: `Upstream request time; the route times out after ${s.timeoutSeconds} s.`,
        unit: units.Milliseconds,
        w: 8,
        queries: quantileQueries((quantile) => egressService.latencyMs(s.id, quantile, W)),
      }),
      timeseries({
        title: `${s.id}: errors`,
        unit: units.RequestsPerSecond,
        w: 8,
        queries: [
          q(egressService.errors5xx(s.id, W), '5xx'),
          q(egressService.timeouts(s.id, W), 'timeouts'),
          q(egressService.connectFailures(s.id, W), 'connect failures'),
        ],
      }),
      timeseries({
        title: `${s.id}: authorization`,
        unit: units.RequestsPerSecond,
        queries: (['ok', 'denied'] as const).map((r) => q(egressService.authz(s.id, r, W), AUTHZ_LEGEND[r])),
      }),
      timeseries({
        title: `${s.id}: as agentd sees it`,
        description: `${METRICS.egressRequestsTotal.name} by status (timeout, unavailable, error when there was no response).`,
        unit: units.RequestsPerSecond,
        queries: [q(egressService.agentdByStatus(s.id, W), '{{status}}')],
      }),
    );
  }

  // Per tier, from the egress access log (Loki).
  // Each query parses only the fields it needs: every parsed field is a series label until the
  // aggregation, so parsing duration_ms for a count would make one series per distinct duration.
  const lines = (fields: readonly string[]) =>
    `${stream({ service: LOG_SERVICES.egress })} ${json([ACCESS_LOG.tier, ...fields])} ${where(ACCESS_LOG.tier, '!=', '')}`;
  d.row('Sandbox tiers (from the egress access log)').add(
    logMetrics({
      title: 'Requests by tier',
      unit: units.Short,
      stack: true,
      w: 8,
      queries: [q(countBy([ACCESS_LOG.tier], lines([]), '$__auto'), '{{tier}}')],
    }),
    logMetrics({
      title: 'Errors by tier (5xx)',
      unit: units.Short,
      w: 8,
      queries: [q(countBy([ACCESS_LOG.tier], `${lines([ACCESS_LOG.status])} ${where(ACCESS_LOG.status, '>=', 500)}`, '$__auto'), '{{tier}}')],
    }),
    logMetrics({
      title: `Latency ${pLabel(0.95)} by tier`,
      unit: units.Milliseconds,
      w: 8,
      queries: [q(quantileOf(0.95, ACCESS_LOG.durationMs, lines([ACCESS_LOG.durationMs]), '$__auto', [ACCESS_LOG.tier]), '{{tier}}')],
    }),
    ...Object.values(spec.sandboxTiers).map((t) =>
      logMetrics({
        title: `Tier ${t.id}: requests by status`,
        description: `Services: ${t.services.join(', ') || 'none'}; ${t.requestsPerMinute} requests per minute per sandbox and service.`,
        unit: units.Short,
        stack: true,
        w: 8,
        queries: [q(countBy([ACCESS_LOG.status], `${lines([ACCESS_LOG.status])} ${where(ACCESS_LOG.tier, '=', t.id)}`, '$__auto'), '{{status}}')],
      }),
    ),
  );
  return d.build();
}
