// The gateway dashboard: API traffic by status class, latency, OPA's decisions, rate limiting,
// and the gateway's access log.

import * as units from '@grafana/grafana-foundation-sdk/units';
import { LOG_SERVICES } from '../../components/render/monitoring/alloy.ts';
import { ALERT_THRESHOLDS } from '../../components/render/monitoring/alerts.ts';
import { json, stream, where } from '../../components/render/monitoring/logql.ts';
import { proxy, up } from '../../components/render/monitoring/queries.ts';
import { ENVOY_LABELS } from '../../components/render/monitoring/sources.ts';
import { Board, logs, q, stat, timeseries, type Dashboard } from './panels.ts';
import { ACCESS_LOG, RATIO_THRESHOLDS, UP_MAPPINGS, UP_THRESHOLDS, W, authzQueries, quantileQueries } from './shared.ts';

export function gatewayDashboard(): Dashboard {
  const lines = stream({ service: LOG_SERVICES.gateway });
  return new Board({
    uid: 'agentd-gateway',
    title: 'agentd / Gateway',
    description: 'API clients in, agentd out: requests, latency, authorization by OPA, rate limits per key.',
    tags: ['gateway'],
  })
    .row('Traffic')
    .add(
      stat({ title: 'Gateway', unit: units.NoUnit, queries: [q(up('gateway'), 'up')], mappings: UP_MAPPINGS, thresholds: UP_THRESHOLDS }),
      stat({ title: 'Requests', unit: units.RequestsPerSecond, queries: [q(proxy.responses('gateway', W), 'requests/s')] }),
      stat({
        title: '5xx ratio',
        description: `Share of responses that were 5xx. The GatewayHigh5xxRatio alert fires above ${ALERT_THRESHOLDS.gateway5xxRatio * 100}%.`,
        unit: units.PercentUnit,
        queries: [q(proxy.errorRatio('gateway', W), '5xx')],
        thresholds: RATIO_THRESHOLDS(ALERT_THRESHOLDS.gateway5xxRatio / 2, ALERT_THRESHOLDS.gateway5xxRatio),
      }),
      stat({ title: 'Rate-limited', unit: units.RequestsPerSecond, queries: [q(proxy.rateLimited('gateway', W), '429/s')] }),
      timeseries({
        title: 'Requests by status class',
        description: 'Responses per second, HTTP and gRPC, by class (2xx, 4xx, 5xx).',
        unit: units.RequestsPerSecond,
        stack: true,
        queries: [q(proxy.responsesByClass('gateway', W), `{{${ENVOY_LABELS.codeClass}}}xx`)],
      }),
      timeseries({
        title: 'Latency',
        description: 'Time from the first byte in to the last byte out, including OPA and agentd.',
        unit: units.Milliseconds,
        queries: quantileQueries((quantile) => proxy.latencyMs('gateway', quantile, W)),
      }),
    )
    .row('Authorization and rate limits')
    .add(
      timeseries({
        title: 'Authorization (OPA)',
        description: 'ext_authz checks: allowed, denied by policy, and refused because OPA did not answer (fail closed).',
        unit: units.RequestsPerSecond,
        queries: authzQueries('gateway'),
      }),
      timeseries({
        title: 'Rate limiting',
        description: 'Requests checked against the key tier limits, and those refused with 429.',
        unit: units.RequestsPerSecond,
        queries: [q(proxy.rateLimitChecked('gateway', W), 'checked'), q(proxy.rateLimited('gateway', W), 'rate-limited')],
      }),
    )
    .row('Logs')
    .add(
      logs({ title: 'Access log', description: 'JSON access lines: method, path without query, status, client id, tier, decision id.', expr: lines }),
      logs({
        title: 'Refused and failed requests',
        description: 'Access lines with status 400 or above.',
        expr: `${lines} ${json([ACCESS_LOG.status])} ${where(ACCESS_LOG.status, '>=', 400)}`,
      }),
    )
    .build();
}
