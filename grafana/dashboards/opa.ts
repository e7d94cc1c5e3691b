// The OPA dashboard: decisions as the proxies see them (ext_authz over gRPC: allowed, denied,
// unanswered, and how long Envoy waited), the bundle OPA serves, and its decision log.

import * as units from '@grafana/grafana-foundation-sdk/units';
import { LOG_SERVICES } from '../../components/render/monitoring/alloy.ts';
import { json, stream, where } from '../../components/render/monitoring/logql.ts';
import { opa, perProxy, up } from '../../components/render/monitoring/queries.ts';
import { ENVOY_LABELS } from '../../components/render/monitoring/sources.ts';
import { Board, logs, q, stat, timeseries, type Dashboard } from './panels.ts';
import { AUTHZ_LEGEND, UP_MAPPINGS, UP_THRESHOLDS, W, quantileQueries } from './shared.ts';

/** OPA's decision log lines carry this message (console decision logger). */
const OPA_DECISION_LOG_MSG = 'Decision Log';

export function opaDashboard(): Dashboard {
  return new Board({
    uid: 'agentd-opa',
    title: 'agentd / OPA',
    description: 'The policy engine: decisions for both proxies, decision latency, the active bundle.',
    tags: ['opa'],
  })
    .row('Policy engine')
    .add(
      stat({ title: 'OPA', unit: units.NoUnit, queries: [q(up('opa'), 'up')], mappings: UP_MAPPINGS, thresholds: UP_THRESHOLDS }),
      stat({ title: 'OPA version', unit: units.NoUnit, show: 'name', queries: [q(opa.version(), '{{version}}')] }),
      stat({
        title: 'Bundle revision',
        description: 'The revision of the active policy bundle (its content hash): it changes exactly when policy or data change.',
        unit: units.NoUnit,
        show: 'name',
        queries: [q(opa.bundleRevision(), '{{active_revision}}')],
      }),
      stat({
        title: 'Bundle activated',
        description: 'Time since OPA activated the bundle.',
        unit: units.DurationSeconds,
        queries: [q(opa.bundleAgeSeconds(), 'age')],
      }),
    )
    .row('Decisions')
    .add(
      timeseries({
        title: 'Decisions by proxy',
        description: 'ext_authz checks per proxy filter: allowed, denied, and unanswered (refused: the proxies fail closed).',
        unit: units.RequestsPerSecond,
        queries: (['ok', 'denied', 'error'] as const).map((r) => q(perProxy.authz(r, W), `{{${ENVOY_LABELS.extAuthzPrefix}}} ${AUTHZ_LEGEND[r]}`)),
      }),
      timeseries({
        title: 'Decision latency (as Envoy waits for it)',
        description: "Round trip of the ext_authz gRPC call to OPA, per proxy (Envoy's `opa` cluster).",
        unit: units.Milliseconds,
        queries: quantileQueries((quantile) => opa.decisionLatencyMs(quantile, W), '{{job}} '),
      }),
      timeseries({
        title: 'Plugin status',
        description: '1 per plugin and status (OK, NOT_READY, ERROR).',
        unit: units.Short,
        queries: [q(opa.pluginStatus(), '{{name}} {{status}}')],
      }),
    )
    .row('Logs')
    .add(
      logs({
        title: 'Decision log',
        description: 'One line per decision; keys and authorization headers are masked by policy.',
        expr: `${stream({ service: LOG_SERVICES.opa })} ${json(['msg'])} ${where('msg', '=', OPA_DECISION_LOG_MSG)}`,
      }),
      logs({
        title: 'OPA logs (everything but decisions)',
        expr: `${stream({ service: LOG_SERVICES.opa })} ${json(['msg'])} ${where('msg', '!=', OPA_DECISION_LOG_MSG)}`,
      }),
    )
    .build();
}
