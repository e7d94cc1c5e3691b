// The monitoring overlay, rendered: every file of Prometheus, Loki, Alloy and Grafana from the
// policy spec and the addresses a target gives, plus each workload's command line and
// environment. The Pulumi Monitoring component only places what this returns: plain files as
// config (ConfigMap, bind mount), secret files as secrets.

import type { PolicySpec } from '../../../policy/spec.ts';
import {
  GRAFANA_DEFAULTS, grafanaAdminPasswordPath, grafanaEnv, renderGrafanaFiles, renderGrafanaSecretFiles, type GrafanaRenderInput,
} from '../../../grafana/index.ts';
import type { Endpoint } from '../envoy/common.ts';
import type { WorkloadFiles } from '../platform.ts';
import { toYaml } from '../yaml.ts';
import { ALLOY_CONFIG_FILE, LOG_SERVICES, alloyArgs, renderAlloyFile, type LogDiscovery } from './alloy.ts';
import { renderAlertRules } from './alerts.ts';
import { LOKI_CONFIG_FILE, lokiArgs, renderLokiConfig, type LokiRenderInput } from './loki.ts';
import {
  PROMETHEUS_CONFIG_FILE, PROMETHEUS_RULES_FILE, prometheusArgs, renderPrometheusConfig, type PrometheusRenderInput,
} from './prometheus.ts';

/** Directories inside the monitoring workloads (the upstream images' defaults). */
export const MONITORING_DIRS = {
  prometheus: { config: '/etc/prometheus', data: '/prometheus' },
  loki: { config: '/etc/loki', data: '/loki' },
  alloy: { config: '/etc/alloy', data: '/var/lib/alloy/data' },
} as const;

export interface MonitoringRenderInput {
  /** Prometheus and Loki as the other monitoring workloads reach them (Docker DNS, service DNS, loopback). */
  readonly endpoints: { readonly prometheus: Endpoint; readonly loki: Endpoint };
  readonly prometheus: PrometheusRenderInput & { readonly retentionDays?: number };
  readonly loki: Omit<LokiRenderInput, 'dataDir'>;
  readonly alloy: {
    readonly discovery: LogDiscovery;
    /** Workloads whose logs are shipped (default: every LOG_SERVICES value). */
    readonly services?: readonly string[];
  };
  readonly grafana: Omit<GrafanaRenderInput, 'prometheus' | 'loki' | 'scrapeIntervalSeconds'>;
}

/** What one monitoring workload needs. */
export interface MonitoringWorkload {
  /** Plain files, by path relative to the workload's config directory. */
  readonly files: WorkloadFiles;
  /** Secret files, by path relative to the workload's secrets directory (only Grafana has one). */
  readonly secretFiles: WorkloadFiles;
  /** Where `files` go, and where `secretFiles` go (absolute paths inside the workload). */
  readonly configDir: string;
  readonly secretsDir?: string;
  readonly dataDir: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

export interface RenderedMonitoring {
  readonly prometheus: MonitoringWorkload;
  readonly loki: MonitoringWorkload;
  readonly alloy: MonitoringWorkload;
  readonly grafana: MonitoringWorkload & {
    /** Absolute path of the admin password file (the only secret); grafana.ini refers to it. */
    readonly adminPasswordFile: string;
  };
}

/** Every monitoring file, per workload. */
export function renderMonitoringFiles(spec: PolicySpec, input: MonitoringRenderInput): RenderedMonitoring {
  const dirs = MONITORING_DIRS;
  const grafanaInput: GrafanaRenderInput = {
    ...input.grafana,
    prometheus: input.endpoints.prometheus,
    loki: input.endpoints.loki,
    scrapeIntervalSeconds: input.prometheus.scrapeIntervalSeconds ?? 15,
  };
  const promPort = input.endpoints.prometheus.port;
  return {
    prometheus: {
      files: {
        [PROMETHEUS_CONFIG_FILE]: toYaml(renderPrometheusConfig(input.prometheus)),
        [PROMETHEUS_RULES_FILE]: toYaml(renderAlertRules(spec)),
      },
      secretFiles: {},
      configDir: dirs.prometheus.config,
      dataDir: dirs.prometheus.data,
      args: prometheusArgs({ configDir: dirs.prometheus.config, dataDir: dirs.prometheus.data, listenPort: promPort, retentionDays: input.prometheus.retentionDays }),
      env: {},
    },
    loki: {
      files: { [LOKI_CONFIG_FILE]: toYaml(renderLokiConfig({ ...input.loki, dataDir: dirs.loki.data })) },
      secretFiles: {},
      configDir: dirs.loki.config,
      dataDir: dirs.loki.data,
      args: lokiArgs(dirs.loki.config),
      env: {},
    },
    alloy: {
      files: {
        [ALLOY_CONFIG_FILE]: renderAlloyFile({
          discovery: input.alloy.discovery,
          loki: input.endpoints.loki,
          services: input.alloy.services ?? Object.values(LOG_SERVICES),
        }),
      },
      secretFiles: {},
      configDir: dirs.alloy.config,
      dataDir: dirs.alloy.data,
      args: alloyArgs({ configDir: dirs.alloy.config, dataDir: dirs.alloy.data }),
      env: {},
    },
    grafana: {
      files: renderGrafanaFiles(spec, grafanaInput),
      secretFiles: renderGrafanaSecretFiles(grafanaInput),
      configDir: grafanaInput.configDir ?? GRAFANA_DEFAULTS.configDir,
      secretsDir: grafanaInput.secretsDir ?? GRAFANA_DEFAULTS.secretsDir,
      dataDir: grafanaInput.dataDir ?? GRAFANA_DEFAULTS.dataDir,
      // The image's entrypoint starts grafana-server with GF_PATHS_* from the environment.
      args: [],
      env: grafanaEnv(grafanaInput),
      adminPasswordFile: grafanaAdminPasswordPath(grafanaInput),
    },
  };
}

export { ALERT_NAMES, ALERT_THRESHOLDS, renderAlertRules } from './alerts.ts';
export { LOG_LABELS, LOG_LEVELS, LOG_SERVICES, renderAlloyConfig, renderAlloyFile } from './alloy.ts';
export { renderLokiConfig } from './loki.ts';
export { JOBS, renderPrometheusConfig } from './prometheus.ts';
