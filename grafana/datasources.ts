// The datasources Grafana is provisioned with. Their uids are fixed here, and every panel
// refers to a datasource by these uids, so a dashboard never depends on what a user named them.

/** A panel's or query's reference to a provisioned datasource. */
export interface DatasourceRef {
  readonly type: 'prometheus' | 'loki';
  readonly uid: string;
}

export const PROMETHEUS_DATASOURCE: DatasourceRef = { type: 'prometheus', uid: 'prometheus' };
export const LOKI_DATASOURCE: DatasourceRef = { type: 'loki', uid: 'loki' };
