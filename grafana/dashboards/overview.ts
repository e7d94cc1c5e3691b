// The home dashboard: is everything up, and the one graph per component that says whether
// users are served. Details live in the per-component dashboards (linked by tag).

import * as units from '@grafana/grafana-foundation-sdk/units';
import type { PolicySpec } from '../../policy/spec.ts';
import { LOG_LEVELS } from '../../components/render/monitoring/alloy.ts';
import { stream } from '../../components/render/monitoring/logql.ts';
import { agentd, egressServices, perProxy, proxy, upAll } from '../../components/render/monitoring/queries.ts';
import { ENVOY_LABELS } from '../../components/render/monitoring/sources.ts';
import { Board, logs, q, stat, timeseries, type Dashboard } from './panels.ts';
import { AUTHZ_LEGEND, UP_MAPPINGS, UP_THRESHOLDS, W } from './shared.ts';

export function overviewDashboard(spec: PolicySpec): Dashboard {
  const problems = LOG_LEVELS.filter((l) => l === 'error' || l === 'fatal' || l === 'critical');
  return new Board({
    uid: 'agentd-overview',
    title: 'agentd / Overview',
    description: 'The platform at a glance: components up, requests in and out, intents, decisions.',
    tags: ['overview'],
  })
    .row('Components')
    .add(
      stat({
        title: 'Up',
        unit: units.NoUnit,
        w: 24,
        show: 'value_and_name',
        queries: [q(upAll(), '{{job}}')],
        mappings: UP_MAPPINGS,
        thresholds: UP_THRESHOLDS,
      }),
      timeseries({
        title: 'Gateway requests by status class',
        unit: units.RequestsPerSecond,
        stack: true,
        queries: [q(proxy.responsesByClass('gateway', W), `{{${ENVOY_LABELS.codeClass}}}xx`)],
      }),
      timeseries({
        title: 'Egress requests by service',
        unit: units.RequestsPerSecond,
        stack: true,
        queries: [q(egressServices.responses(spec, W), '{{service}}')],
      }),
      timeseries({ title: 'Intents by outcome', unit: units.RequestsPerSecond, stack: true, queries: [q(agentd.intentsByOutcome(W), '{{outcome}}')] }),
      timeseries({
        title: 'Authorization decisions',
        unit: units.RequestsPerSecond,
        queries: (['ok', 'denied', 'error'] as const).map((r) => q(perProxy.authz(r, W), `{{${ENVOY_LABELS.extAuthzPrefix}}} ${AUTHZ_LEGEND[r]}`)),
      }),
    )
    .row('Logs')
    .add(logs({ title: 'Errors, all services', expr: stream({ level: { oneOf: problems } }) }))
    .build();
}
