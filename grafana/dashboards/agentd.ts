// The agentd dashboard, from the metrics of agentd's contract: intents by outcome, their
// latency, active sandboxes, egress calls, API traffic; and agentd's logs.

import * as units from '@grafana/grafana-foundation-sdk/units';
import { INTENT_OUTCOMES } from '../../agentd/src/contract.ts';
import { LOG_SERVICES, LOG_LEVELS } from '../../components/render/monitoring/alloy.ts';
import { stream } from '../../components/render/monitoring/logql.ts';
import { agentd, up } from '../../components/render/monitoring/queries.ts';
import { METRICS } from '../../components/render/monitoring/sources.ts';
import { Board, logs, q, stat, timeseries, type Dashboard } from './panels.ts';
import { UP_MAPPINGS, UP_THRESHOLDS, W, quantileQueries } from './shared.ts';

export function agentdDashboard(): Dashboard {
  const problems = LOG_LEVELS.filter((l) => l === 'warn' || l === 'error' || l === 'fatal');
  return new Board({
    uid: 'agentd-daemon',
    title: 'agentd / Daemon',
    description: 'Sandboxes and their intents: outcomes, latency, egress calls, API traffic.',
    tags: ['agentd'],
  })
    .row('Daemon')
    .add(
      stat({ title: 'agentd', unit: units.NoUnit, queries: [q(up('agentd'), 'up')], mappings: UP_MAPPINGS, thresholds: UP_THRESHOLDS }),
      stat({ title: 'Version', unit: units.NoUnit, show: 'name', queries: [q(agentd.version(), '{{version}}')] }),
      stat({ title: 'Active sandboxes', unit: units.Short, queries: [q(agentd.sandboxesActive(), 'active')] }),
      stat({ title: 'Intents', unit: units.RequestsPerSecond, queries: [q(agentd.intents(W), 'intents/s')] }),
    )
    .row('Intents')
    .add(
      timeseries({
        title: 'Intents by outcome',
        description: `${METRICS.intentsTotal.name}: ${INTENT_OUTCOMES.join(', ')} (ok = the egress proxy answered, whatever the status).`,
        unit: units.RequestsPerSecond,
        stack: true,
        queries: [q(agentd.intentsByOutcome(W), '{{outcome}}')],
      }),
      timeseries({
        title: 'Intent latency',
        description: `${METRICS.intentDurationSeconds.name}: from accepting an intent to its completion.`,
        unit: units.Seconds,
        queries: quantileQueries((quantile) => agentd.intentLatencySeconds(quantile, W)),
      }),
      timeseries({ title: 'Active sandboxes', unit: units.Short, queries: [q(agentd.sandboxesActive(), 'active')] }),
      timeseries({
        title: 'Egress requests by service',
        description: `${METRICS.egressRequestsTotal.name}: what agentd sent to the egress proxy.`,
        unit: units.RequestsPerSecond,
        stack: true,
        queries: [q(agentd.egressByService(W), '{{service}}')],
      }),
    )
    .row('API')
    .add(
      timeseries({ title: 'HTTP requests by status', unit: units.RequestsPerSecond, stack: true, queries: [q(agentd.httpByStatus(W), '{{status}}')] }),
      timeseries({ title: 'gRPC calls by code', unit: units.RequestsPerSecond, stack: true, queries: [q(agentd.grpcByCode(W), '{{code}}')] }),
    )
    .row('Logs')
    .add(
      logs({ title: 'Warnings and errors', expr: stream({ service: LOG_SERVICES.agentd, level: { oneOf: problems } }) }),
      logs({ title: 'All agentd logs', expr: stream({ service: LOG_SERVICES.agentd }) }),
    )
    .build();
}
