// A typed subset of Grafana's dashboard JSON model (schemaVersion 39) and a builder that lays
// panels out on the 24-column grid, numbers them, and ties every query to a provisioned
// datasource. Dashboards are data: the builders in this directory call these functions, and
// JSON.stringify writes the file.

import { LOKI_DATASOURCE, PROMETHEUS_DATASOURCE, type DatasourceRef } from '../datasources.ts';

export interface GridPos {
  readonly x: number;
  readonly y: number;
  readonly w: number;
  readonly h: number;
}

export interface PrometheusTarget {
  readonly refId: string;
  readonly datasource: DatasourceRef;
  readonly expr: string;
  readonly legendFormat: string;
  readonly range: boolean;
  readonly instant: boolean;
}

export interface LokiTarget {
  readonly refId: string;
  readonly datasource: DatasourceRef;
  readonly expr: string;
  readonly legendFormat?: string;
  readonly queryType: 'range';
}

export type Target = PrometheusTarget | LokiTarget;

export type PanelType = 'row' | 'timeseries' | 'stat' | 'logs';

export interface Panel {
  readonly id: number;
  readonly type: PanelType;
  readonly title: string;
  readonly description?: string;
  readonly gridPos: GridPos;
  readonly datasource?: DatasourceRef;
  readonly targets?: readonly Target[];
  readonly fieldConfig?: object;
  readonly options?: object;
  readonly collapsed?: boolean;
  readonly panels?: readonly Panel[];
}

export interface Dashboard {
  readonly id: null;
  readonly uid: string;
  readonly title: string;
  readonly description: string;
  readonly tags: readonly string[];
  readonly timezone: 'browser';
  readonly editable: boolean;
  readonly graphTooltip: 1;
  readonly schemaVersion: 39;
  readonly version: 1;
  readonly refresh: string;
  readonly time: { readonly from: string; readonly to: string };
  readonly templating: { readonly list: readonly never[] };
  readonly annotations: { readonly list: readonly never[] };
  readonly links: readonly object[];
  readonly panels: readonly Panel[];
}

/** The tag every platform dashboard carries; dashboards link to each other through it. */
export const DASHBOARD_TAG = 'agentd';

/** A Prometheus query of a panel: the expression and its legend (`{{label}}` placeholders). */
export interface PromQuery {
  readonly expr: string;
  readonly legend: string;
}

export const q = (expr: string, legend: string): PromQuery => ({ expr, legend });

export type Unit = 'reqps' | 'percentunit' | 'ms' | 's' | 'short' | 'none' | 'dtdurations';

interface Common {
  readonly title: string;
  readonly description?: string;
  /** Width on the 24-column grid (default 12). */
  readonly w?: number;
  /** Height in grid rows (default 8). */
  readonly h?: number;
}

const REF_IDS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** Builds one dashboard: panels flow left to right and wrap; a row starts a new line. */
export class DashboardBuilder {
  private readonly panels: Panel[] = [];
  private nextId = 1;
  private x = 0;
  private y = 0;
  private lineHeight = 0;
  private readonly meta: { uid: string; title: string; description: string; tags?: readonly string[] };

  constructor(meta: { uid: string; title: string; description: string; tags?: readonly string[] }) {
    if (!/^[a-zA-Z0-9_-]{1,40}$/.test(meta.uid)) throw new Error(`dashboard uid ${JSON.stringify(meta.uid)} must be 1-40 of [a-zA-Z0-9_-]`);
    this.meta = meta;
  }

  private place(w: number, h: number): GridPos {
    if (w < 1 || w > 24) throw new Error(`panel width ${w} is not in 1..24`);
    if (this.x + w > 24) this.newLine();
    const pos = { x: this.x, y: this.y, w, h };
    this.x += w;
    this.lineHeight = Math.max(this.lineHeight, h);
    return pos;
  }

  private newLine(): void {
    this.y += this.lineHeight;
    this.x = 0;
    this.lineHeight = 0;
  }

  private add(panel: Omit<Panel, 'id'>): this {
    this.panels.push({ id: this.nextId++, ...panel });
    return this;
  }

  /** A row header across the grid. */
  row(title: string): this {
    if (this.x > 0) this.newLine();
    this.add({ type: 'row', title, collapsed: false, gridPos: { x: 0, y: this.y, w: 24, h: 1 }, panels: [] });
    this.y += 1;
    return this;
  }

  private promTargets(queries: readonly PromQuery[], instant: boolean): PrometheusTarget[] {
    if (queries.length === 0 || queries.length > REF_IDS.length) throw new Error(`a panel has 1..${REF_IDS.length} queries, got ${queries.length}`);
    return queries.map((query, i) => ({
      refId: REF_IDS[i]!,
      datasource: PROMETHEUS_DATASOURCE,
      expr: query.expr,
      legendFormat: query.legend,
      range: !instant,
      instant,
    }));
  }

  /** A time series graph of Prometheus queries. */
  timeseries(p: Common & { readonly unit: Unit; readonly queries: readonly PromQuery[]; readonly stack?: boolean }): this {
    return this.add({
      type: 'timeseries',
      title: p.title,
      ...(p.description ? { description: p.description } : {}),
      gridPos: this.place(p.w ?? 12, p.h ?? 8),
      datasource: PROMETHEUS_DATASOURCE,
      targets: this.promTargets(p.queries, false),
      fieldConfig: {
        defaults: {
          unit: p.unit,
          min: 0,
          custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: p.stack ? 30 : 10, showPoints: 'never', stacking: { mode: p.stack ? 'normal' : 'none', group: 'A' } },
        },
        overrides: [],
      },
      options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
    });
  }

  /**
   * A single-value panel. `show: 'name'` displays the series name instead of its value (for
   * values carried in labels, such as a version or a bundle revision).
   */
  stat(p: Common & {
    readonly unit: Unit;
    readonly queries: readonly PromQuery[];
    readonly show?: 'value' | 'name' | 'value_and_name';
    /** Value -> text, e.g. up: 1 -> UP (green), 0 -> DOWN (red). */
    readonly mappings?: readonly { readonly value: number; readonly text: string; readonly color: string }[];
    /** Thresholds: the base color, then colors from a value on. */
    readonly thresholds?: readonly { readonly value: number | null; readonly color: string }[];
  }): this {
    const mappings = p.mappings
      ? [{ type: 'value', options: Object.fromEntries(p.mappings.map((m) => [String(m.value), { text: m.text, color: m.color, index: 0 }])) }]
      : [];
    return this.add({
      type: 'stat',
      title: p.title,
      ...(p.description ? { description: p.description } : {}),
      gridPos: this.place(p.w ?? 6, p.h ?? 4),
      datasource: PROMETHEUS_DATASOURCE,
      targets: this.promTargets(p.queries, true),
      fieldConfig: {
        defaults: {
          unit: p.unit,
          mappings,
          thresholds: { mode: 'absolute', steps: p.thresholds ?? [{ value: null, color: 'green' }] },
          color: { mode: 'thresholds' },
        },
        overrides: [],
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        textMode: p.show ?? 'value',
        colorMode: 'value',
        graphMode: 'none',
        justifyMode: 'auto',
        orientation: 'auto',
      },
    });
  }

  /** Log lines from Loki. */
  logs(p: Common & { readonly expr: string }): this {
    return this.add({
      type: 'logs',
      title: p.title,
      ...(p.description ? { description: p.description } : {}),
      gridPos: this.place(p.w ?? 24, p.h ?? 10),
      datasource: LOKI_DATASOURCE,
      targets: [{ refId: 'A', datasource: LOKI_DATASOURCE, expr: p.expr, queryType: 'range' }],
      options: { showTime: true, wrapLogMessage: true, sortOrder: 'Descending', enableLogDetails: true, dedupStrategy: 'none', prettifyLogMessage: false },
    });
  }

  /** A time series of LogQL metric queries (counts or quantiles computed from log lines). */
  logMetrics(p: Common & { readonly unit: Unit; readonly queries: readonly PromQuery[]; readonly stack?: boolean }): this {
    return this.add({
      type: 'timeseries',
      title: p.title,
      ...(p.description ? { description: p.description } : {}),
      gridPos: this.place(p.w ?? 12, p.h ?? 8),
      datasource: LOKI_DATASOURCE,
      targets: p.queries.map((query, i) => ({ refId: REF_IDS[i]!, datasource: LOKI_DATASOURCE, expr: query.expr, legendFormat: query.legend, queryType: 'range' as const })),
      fieldConfig: {
        defaults: { unit: p.unit, min: 0, custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: p.stack ? 30 : 10, showPoints: 'never', stacking: { mode: p.stack ? 'normal' : 'none', group: 'A' } } },
        overrides: [],
      },
      options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
    });
  }

  build(): Dashboard {
    return {
      id: null,
      uid: this.meta.uid,
      title: this.meta.title,
      description: this.meta.description,
      tags: [DASHBOARD_TAG, ...(this.meta.tags ?? [])],
      timezone: 'browser',
      editable: false,
      graphTooltip: 1,
      schemaVersion: 39,
      version: 1,
      refresh: '30s',
      time: { from: 'now-1h', to: 'now' },
      templating: { list: [] },
      annotations: { list: [] },
      links: [{ type: 'dashboards', tags: [DASHBOARD_TAG], asDropdown: true, title: 'agentd dashboards', includeVars: false, keepTime: true }],
      panels: this.panels,
    };
  }
}

/** Every query of a dashboard, with the panel it belongs to (for tests and docs). */
export function dashboardQueries(d: Dashboard): { panel: Panel; target: Target }[] {
  const out: { panel: Panel; target: Target }[] = [];
  const walk = (panels: readonly Panel[]) => {
    for (const panel of panels) {
      for (const target of panel.targets ?? []) out.push({ panel, target });
      if (panel.panels) walk(panel.panels);
    }
  };
  walk(d.panels);
  return out;
}
