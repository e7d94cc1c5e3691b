// The Grafana dashboards: a leaf renderer of the monitoring plan. They take their metric names,
// PromQL and LogQL from the plan (../sources.ts, ../queries.ts, ../logql.ts, ../alloy.ts) and
// their per-service and per-tier panels from the policy spec; nothing in the plan imports them
// back. The Grafana workload (../grafana.ts) calls this module, and only this one.

import type { PolicySpec } from '../../policy/spec.ts';
import { agentdDashboard } from './agentd.ts';
import { egressDashboard } from './egress.ts';
import { gatewayDashboard } from './gateway.ts';
import { opaDashboard } from './opa.ts';
import { overviewDashboard } from './overview.ts';
import type { Dashboard } from './panels.ts';

export { dashboardQueries, panelQueries, type Dashboard, type PanelQuery } from './panels.ts';
export { ACCESS_LOG } from './shared.ts';

/** The dashboards, by file name (without `.json`). */
export const DASHBOARD_NAMES = ['overview', 'gateway', 'egress', 'agentd', 'opa'] as const;
export type DashboardName = (typeof DASHBOARD_NAMES)[number];

/** The home dashboard (grafana.ini's default_home_dashboard_path), a file of renderDashboardFiles. */
export const HOME_DASHBOARD_FILE = 'overview.json' satisfies `${DashboardName}.json`;

/** The dashboards as objects (Grafana's dashboard JSON model, from the Foundation SDK). */
export function renderDashboards(spec: PolicySpec): Record<DashboardName, Dashboard> {
  return {
    overview: overviewDashboard(spec),
    gateway: gatewayDashboard(),
    egress: egressDashboard(spec),
    agentd: agentdDashboard(),
    opa: opaDashboard(),
  };
}

/** The dashboard files, by file name (`overview.json`, ...): what Grafana's file provider reads. */
export function renderDashboardFiles(spec: PolicySpec): Record<string, string> {
  const dashboards = renderDashboards(spec);
  return Object.fromEntries(DASHBOARD_NAMES.map((name) => [`${name}.json`, `${JSON.stringify(dashboards[name], null, 2)}\n`]));
}
