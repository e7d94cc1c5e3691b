// Prometheus' configuration: one job per platform component, each scraping the endpoint the
// target gives (loopback in tests, Docker DNS names, Kubernetes service DNS), and the alert
// rules file beside it. Envoy is scraped on its stats-only listener, never on its admin port.

import type { Endpoint } from '../envoy/common.ts';
import { AGENTD_METRICS_PATH, ENVOY_STATS_PATH, OPA_METRICS_PATH } from './sources.ts';

/** Prometheus job names: the `job` label every dashboard and alert selects on. */
export const JOBS = {
  gateway: 'gateway',
  egress: 'egress',
  opa: 'opa',
  agentd: 'agentd',
} as const;
export type Job = keyof typeof JOBS;

/** The configuration file, and the rules file Prometheus reads beside it (relative paths resolve against the config file). */
export const PROMETHEUS_CONFIG_FILE = 'prometheus.yml';
export const PROMETHEUS_RULES_FILE = 'alerts.yml';

/** Where each component is scraped. One endpoint or several (replicas). */
export interface ScrapeTargets {
  /** The gateway Envoy's stats listener. */
  readonly gateway: Endpoint | readonly Endpoint[];
  /** The egress Envoy's stats listener. */
  readonly egress: Endpoint | readonly Endpoint[];
  /** OPA's HTTP API (8181 in containers); it serves /metrics. */
  readonly opa: Endpoint | readonly Endpoint[];
  /** agentd's metrics listener (AGENTD_METRICS_PORT; it serves the contract's METRICS_PATH). */
  readonly agentd: Endpoint | readonly Endpoint[];
}

export interface PrometheusRenderInput {
  readonly targets: ScrapeTargets;
  /** Scrape and rule evaluation interval, seconds (default 15; the live test uses 1). */
  readonly scrapeIntervalSeconds?: number;
  /** Labels added to every series and alert, e.g. `{ stack: 'prod' }`. */
  readonly externalLabels?: Readonly<Record<string, string>>;
  /** Alertmanagers to send alerts to; none by default (alerts are then visible in Prometheus and Grafana). */
  readonly alertmanagers?: readonly Endpoint[];
}

/** The scrape path per job. */
export const SCRAPE_PATHS: Readonly<Record<Job, string>> = {
  gateway: ENVOY_STATS_PATH,
  egress: ENVOY_STATS_PATH,
  opa: OPA_METRICS_PATH,
  agentd: AGENTD_METRICS_PATH,
};

export interface ScrapeConfig {
  readonly job_name: string;
  readonly metrics_path: string;
  readonly scheme: 'http';
  readonly static_configs: readonly { readonly targets: readonly string[] }[];
}

export interface PrometheusConfig {
  readonly global: {
    readonly scrape_interval: string;
    readonly scrape_timeout: string;
    readonly evaluation_interval: string;
    readonly external_labels?: Readonly<Record<string, string>>;
  };
  readonly rule_files: readonly string[];
  readonly alerting?: { readonly alertmanagers: readonly { readonly static_configs: readonly { readonly targets: readonly string[] }[] }[] };
  readonly scrape_configs: readonly ScrapeConfig[];
}

const hostPort = (e: Endpoint) => (e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);
const list = (t: Endpoint | readonly Endpoint[]): readonly Endpoint[] => ('host' in t ? [t as Endpoint] : (t as readonly Endpoint[]));

/** Prometheus' configuration for the platform (serialize with toYaml). */
export function renderPrometheusConfig(input: PrometheusRenderInput): PrometheusConfig {
  const interval = input.scrapeIntervalSeconds ?? 15;
  if (!Number.isInteger(interval) || interval < 1) throw new Error(`scrapeIntervalSeconds must be a whole number >= 1, got ${interval}`);
  // A scrape must end before the next one starts; Envoy's full stats page takes well under 10 s.
  const timeout = Math.min(10, interval);
  const jobs = Object.keys(JOBS) as Job[];
  return {
    global: {
      scrape_interval: `${interval}s`,
      scrape_timeout: `${timeout}s`,
      evaluation_interval: `${interval}s`,
      ...(input.externalLabels && Object.keys(input.externalLabels).length > 0
        ? { external_labels: Object.fromEntries(Object.entries(input.externalLabels).sort(([a], [b]) => a.localeCompare(b))) }
        : {}),
    },
    rule_files: [PROMETHEUS_RULES_FILE],
    ...(input.alertmanagers && input.alertmanagers.length > 0
      ? { alerting: { alertmanagers: [{ static_configs: [{ targets: input.alertmanagers.map(hostPort) }] }] } }
      : {}),
    scrape_configs: jobs.map((job) => ({
      job_name: JOBS[job],
      metrics_path: SCRAPE_PATHS[job],
      scheme: 'http' as const,
      static_configs: [{ targets: list(input.targets[job]).map(hostPort) }],
    })),
  };
}

/** Prometheus' command line in every target: config, storage, retention, listen address. */
export function prometheusArgs(opts: { configDir: string; dataDir: string; listenPort: number; retentionDays?: number }): string[] {
  return [
    `--config.file=${opts.configDir}/${PROMETHEUS_CONFIG_FILE}`,
    `--storage.tsdb.path=${opts.dataDir}`,
    `--storage.tsdb.retention.time=${opts.retentionDays ?? 15}d`,
    `--web.listen-address=0.0.0.0:${opts.listenPort}`,
  ];
}
