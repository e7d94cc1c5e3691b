// The platform's panel presets over the Grafana Foundation SDK (@grafana/grafana-foundation-sdk):
// the SDK owns the dashboard model (types, defaults, JSON shape, grid placement); this file only
// fixes the house style (units, stacking, legends, value mappings), ties every query to a
// provisioned datasource, numbers panels and checks the grid. Every preset returns the SDK's own
// panel builder, so a dashboard can still call any SDK option on it.
//
// One thing is written by hand: the dashboard link (see `dashboardsMenu`), because the SDK's
// DashboardLinkBuilder always sets `placement: "inControlsMenu"`, which moves the link out of the
// dashboard's link bar into Grafana's controls menu (docs/monitoring.md).

import type * as cog from '@grafana/grafana-foundation-sdk/cog';
import * as common from '@grafana/grafana-foundation-sdk/common';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as logsPanel from '@grafana/grafana-foundation-sdk/logs';
import * as loki from '@grafana/grafana-foundation-sdk/loki';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as statPanel from '@grafana/grafana-foundation-sdk/stat';
import * as timeseriesPanel from '@grafana/grafana-foundation-sdk/timeseries';
import type * as units from '@grafana/grafana-foundation-sdk/units';
import { GRAFANA_DATASOURCES } from '../../components/render/monitoring/sources.ts';

export type { Dashboard } from '@grafana/grafana-foundation-sdk/dashboard';

/** The tag every platform dashboard carries; dashboards link to each other through it. */
const DASHBOARD_TAG = 'agentd';

/** A Prometheus or LogQL metric query of a panel: the expression and its legend (`{{label}}` placeholders). */
export interface PromQuery {
  readonly expr: string;
  readonly legend: string;
}

export const q = (expr: string, legend: string): PromQuery => ({ expr, legend });

/** A unit Grafana knows: one of the SDK's `units` constants (`reqps`, `ms`, `percentunit`, ...). */
export type Unit = Extract<(typeof units)[keyof typeof units], string>;

interface Common {
  readonly title: string;
  readonly description?: string;
  /** Width on the 24-column grid (default: 12 for graphs, 6 for stats, 24 for logs). */
  readonly w?: number;
  /** Height in grid rows (default: 8 for graphs, 4 for stats, 10 for logs). */
  readonly h?: number;
}

const REF_IDS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

function refIds(n: number): string[] {
  if (n === 0 || n > REF_IDS.length) throw new Error(`a panel has 1..${REF_IDS.length} queries, got ${n}`);
  return [...REF_IDS.slice(0, n)];
}

/** Title, description and size, common to every preset. */
function sized<B extends { title(t: string): B; description(d: string): B; span(w: number): B; height(h: number): B }>(
  b: B,
  p: Common,
  w: number,
  h: number,
): B {
  const width = p.w ?? w;
  if (!Number.isInteger(width) || width < 1 || width > 24) throw new Error(`panel "${p.title}": width ${width} is not in 1..24`);
  b.title(p.title)
    .span(width)
    .height(p.h ?? h);
  return p.description ? b.description(p.description) : b;
}

const prometheusQueries = (queries: readonly PromQuery[], instant: boolean): prometheus.DataqueryBuilder[] =>
  refIds(queries.length).map((refId, i) => {
    const query = new prometheus.DataqueryBuilder()
      .refId(refId)
      .datasource(GRAFANA_DATASOURCES.prometheus)
      .expr(queries[i]!.expr)
      .legendFormat(queries[i]!.legend);
    return instant ? query.instant() : query.range();
  });

const lokiQuery = (refId: string, expr: string, legend?: string): loki.DataqueryBuilder => {
  const query = new loki.DataqueryBuilder().refId(refId).datasource(GRAFANA_DATASOURCES.loki).expr(expr);
  if (legend !== undefined) query.legendFormat(legend);
  return query.queryType(loki.LokiQueryType.Range);
};

/** Lines, stacked or not, a legend below and a tooltip with every series. */
function graph(p: Common & { readonly unit: Unit; readonly stack?: boolean }): timeseriesPanel.PanelBuilder {
  return sized(new timeseriesPanel.PanelBuilder(), p, 12, 8)
    .unit(p.unit)
    .min(0)
    .drawStyle(common.GraphDrawStyle.Line)
    .lineWidth(1)
    .fillOpacity(p.stack ? 30 : 10)
    .showPoints(common.VisibilityMode.Never)
    .stacking(new common.StackingConfigBuilder().mode(p.stack ? common.StackingMode.Normal : common.StackingMode.None).group('A'))
    .legend(new common.VizLegendOptionsBuilder().displayMode(common.LegendDisplayMode.List).placement(common.LegendPlacement.Bottom).showLegend(true))
    .tooltip(new common.VizTooltipOptionsBuilder().mode(common.TooltipDisplayMode.Multi).sort(common.SortOrder.Descending));
}

/** A time series graph of Prometheus queries. */
export function timeseries(
  p: Common & { readonly unit: Unit; readonly queries: readonly PromQuery[]; readonly stack?: boolean },
): timeseriesPanel.PanelBuilder {
  return graph(p).datasource(GRAFANA_DATASOURCES.prometheus).targets(prometheusQueries(p.queries, false));
}

/** A time series of LogQL metric queries (counts or quantiles computed from log lines). */
export function logMetrics(
  p: Common & { readonly unit: Unit; readonly queries: readonly PromQuery[]; readonly stack?: boolean },
): timeseriesPanel.PanelBuilder {
  const ids = refIds(p.queries.length);
  return graph(p)
    .datasource(GRAFANA_DATASOURCES.loki)
    .targets(p.queries.map((query, i) => lokiQuery(ids[i]!, query.expr, query.legend)));
}

/** A value -> text mapping of a stat, e.g. up: 1 -> UP (green), 0 -> DOWN (red). */
export interface ValueText {
  readonly value: number;
  readonly text: string;
  readonly color: string;
}

/** A threshold step: the base color (value null), then colors from a value on. */
export type Step = dashboard.Threshold;

const SHOW: Readonly<Record<'value' | 'name' | 'value_and_name', common.BigValueTextMode>> = {
  value: common.BigValueTextMode.Value,
  name: common.BigValueTextMode.Name,
  value_and_name: common.BigValueTextMode.ValueAndName,
};

/**
 * A single-value panel (instant queries, last value). `show: 'name'` displays the series name
 * instead of its value (for values carried in labels, such as a version or a bundle revision).
 */
export function stat(
  p: Common & {
    readonly unit: Unit;
    readonly queries: readonly PromQuery[];
    readonly show?: keyof typeof SHOW;
    readonly mappings?: readonly ValueText[];
    readonly thresholds?: readonly Step[];
  },
): statPanel.PanelBuilder {
  const mappings: dashboard.ValueMapping[] = p.mappings
    ? [
        {
          type: dashboard.MappingType.ValueToText,
          options: Object.fromEntries(p.mappings.map((m) => [String(m.value), { text: m.text, color: m.color, index: 0 }])),
        },
      ]
    : [];
  return sized(new statPanel.PanelBuilder(), p, 6, 4)
    .datasource(GRAFANA_DATASOURCES.prometheus)
    .targets(prometheusQueries(p.queries, true))
    .unit(p.unit)
    .mappings(mappings)
    .thresholds(new dashboard.ThresholdsConfigBuilder().mode(dashboard.ThresholdsMode.Absolute).steps([...(p.thresholds ?? [{ value: null, color: 'green' }])]))
    .colorScheme(new dashboard.FieldColorBuilder().mode(dashboard.FieldColorModeId.Thresholds))
    .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']).fields('').values(false))
    .textMode(SHOW[p.show ?? 'value'])
    .colorMode(common.BigValueColorMode.Value)
    .graphMode(common.BigValueGraphMode.None)
    .justifyMode(common.BigValueJustifyMode.Auto)
    .orientation(common.VizOrientation.Auto);
}

/** Log lines from Loki, newest first. */
export function logs(p: Common & { readonly expr: string }): logsPanel.PanelBuilder {
  return sized(new logsPanel.PanelBuilder(), p, 24, 10)
    .datasource(GRAFANA_DATASOURCES.loki)
    .targets([lokiQuery('A', p.expr)])
    .showTime(true)
    .wrapLogMessage(true)
    .sortOrder(common.LogsSortOrder.Descending)
    .enableLogDetails(true)
    .dedupStrategy(common.LogsDedupStrategy.None)
    .prettifyLogMessage(false);
}

/**
 * The "agentd dashboards" menu: every dashboard with the platform's tag. Built by the SDK, then
 * its `placement` dropped: the SDK always sets `inControlsMenu`, and Grafana shows a link with any
 * placement in its controls menu instead of the dashboard's link bar, where this menu belongs.
 */
function dashboardsMenu(): cog.Builder<dashboard.DashboardLink> {
  const { placement: _inControlsMenu, ...link } = new dashboard.DashboardLinkBuilder('agentd dashboards')
    .type(dashboard.DashboardLinkType.Dashboards)
    .tags([DASHBOARD_TAG])
    .asDropdown(true)
    .includeVars(false)
    .keepTime(true)
    .build();
  return { build: () => link };
}

/** A panel builder of any SDK panel type. */
export interface AnyPanelBuilder extends cog.Builder<dashboard.Panel> {
  id(id: number): unknown;
}

/**
 * One platform dashboard, built by the SDK's DashboardBuilder: rows and panels are placed by the
 * SDK's grid layout (left to right, wrapping at 24 columns; a row starts a new line) and numbered
 * here in order, so ids are stable.
 */
export class Board {
  private readonly d: dashboard.DashboardBuilder;
  private nextId = 1;

  constructor(meta: { readonly uid: string; readonly title: string; readonly description: string; readonly tags?: readonly string[] }) {
    if (!/^[a-zA-Z0-9_-]{1,40}$/.test(meta.uid)) throw new Error(`dashboard uid ${JSON.stringify(meta.uid)} must be 1-40 of [a-zA-Z0-9_-]`);
    this.d = new dashboard.DashboardBuilder(meta.title)
      .id(null)
      .uid(meta.uid)
      .description(meta.description)
      .tags([DASHBOARD_TAG, ...(meta.tags ?? [])])
      .timezone('browser')
      .readonly()
      .tooltip(dashboard.DashboardCursorSync.Crosshair)
      .version(1)
      .refresh('30s')
      .time({ from: 'now-1h', to: 'now' })
      .links([dashboardsMenu()]);
  }

  /** A row header across the grid; the panels added after it belong to it. */
  row(title: string): this {
    this.d.withRow(new dashboard.RowBuilder(title).id(this.nextId++));
    return this;
  }

  /** Panels, in reading order. */
  add(...panels: readonly AnyPanelBuilder[]): this {
    for (const panel of panels) {
      panel.id(this.nextId++);
      this.d.withPanel(panel);
    }
    return this;
  }

  build(): dashboard.Dashboard {
    const d = this.d.build();
    // The SDK wraps to a new line only once a line is full: a panel wider than what is left of
    // its line would stick out of the grid.
    for (const panel of d.panels ?? []) {
      const g = panel.gridPos;
      if (!g || g.x + g.w > 24) throw new Error(`dashboard ${d.uid}: panel "${panel.title}" does not fit the 24-column grid (${JSON.stringify(g)})`);
    }
    return d;
  }
}

/** A query of a panel, as rendered: enough to evaluate it and to check its datasource. */
export interface PanelQuery {
  readonly refId: string;
  readonly datasource: { readonly type: string; readonly uid: string };
  readonly expr: string;
  readonly legendFormat?: string;
}

/** The queries of a panel (none for a row); throws on a query without refId, datasource or expression. */
export function panelQueries(panel: dashboard.Panel | dashboard.RowPanel): PanelQuery[] {
  if (panel.type === 'row') return [];
  return ((panel as dashboard.Panel).targets ?? []).map((target) => {
    const t = target as unknown as Partial<PanelQuery>;
    if (typeof t.refId !== 'string' || typeof t.expr !== 'string' || typeof t.datasource?.type !== 'string' || typeof t.datasource.uid !== 'string') {
      throw new Error(`panel "${panel.title}": a query without refId, datasource or expression`);
    }
    return t as PanelQuery;
  });
}

/** Every query of a dashboard, with the panel it belongs to (for tests and docs). */
export function dashboardQueries(d: dashboard.Dashboard): { panel: dashboard.Panel | dashboard.RowPanel; target: PanelQuery }[] {
  const out: { panel: dashboard.Panel | dashboard.RowPanel; target: PanelQuery }[] = [];
  const walk = (panels: readonly (dashboard.Panel | dashboard.RowPanel)[]) => {
    for (const panel of panels) {
      for (const target of panelQueries(panel)) out.push({ panel, target });
      if (panel.type === 'row') walk((panel as dashboard.RowPanel).panels);
    }
  };
  walk(d.panels ?? []);
  return out;
}
