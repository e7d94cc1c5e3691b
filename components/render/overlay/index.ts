// The monitoring overlay, rendered: every file of Prometheus, Loki, Alloy and Grafana from the
// policy spec and the addresses a target gives, plus each workload's command line and
// environment. It composes the monitoring plan (components/render/monitoring: sources, queries,
// Prometheus, rules, Loki, Alloy) with Grafana (grafana/: the workload and the dashboards, a
// leaf renderer of the plan), so that neither of those two imports the other's caller.
// planMonitoring turns the result into the four planned workloads that planPlatform adds to the
// platform's; the Platform component only resolves their images and secrets.

import type { PolicySpec } from '../../../policy/spec.ts';
import { PORTS, RUN_AS_USER, WORKLOADS } from '../../layout.ts';
import type { Connection, Endpoint, ImageRole, PlannedWorkload, SecretRef, TargetCapabilities } from '../types.ts';
import { toYaml } from '../yaml.ts';
import { ALLOY_CONFIG_FILE, ALLOY_HTTP_PORT, LOG_SERVICES, alloyArgs, renderAlloyFile, type LogDiscovery } from '../monitoring/alloy.ts';
import { renderAlertRules } from '../monitoring/alerts.ts';
import {
  GRAFANA_DEFAULTS,
  grafanaAdminPasswordPath,
  grafanaEnv,
  renderGrafanaFiles,
  renderGrafanaSecretFiles,
  type GrafanaRenderInput,
} from '../../../grafana/index.ts';
import { LOKI_CONFIG_FILE, LOKI_HTTP_PORT, lokiArgs, renderLokiConfig, type LokiRenderInput } from '../monitoring/loki.ts';
import { PROMETHEUS_CONFIG_FILE, PROMETHEUS_RULES_FILE, prometheusArgs, renderPrometheusConfig, type PrometheusRenderInput } from '../monitoring/prometheus.ts';

/** Directories inside the monitoring workloads (the upstream images' defaults). */
const MONITORING_DIRS = {
  prometheus: { config: '/etc/prometheus', data: '/prometheus' },
  loki: { config: '/etc/loki', data: '/loki' },
  alloy: { config: '/etc/alloy', data: '/var/lib/alloy/data' },
} as const;

export interface MonitoringRenderInput<S = string> {
  /** Prometheus and Loki as the other monitoring workloads reach them (Docker DNS, service DNS, loopback). */
  readonly endpoints: { readonly prometheus: Endpoint; readonly loki: Endpoint };
  readonly prometheus: PrometheusRenderInput & { readonly retentionDays?: number };
  readonly loki: Omit<LokiRenderInput, 'dataDir'>;
  readonly alloy: {
    readonly discovery: LogDiscovery;
    /** Workloads whose logs are shipped (default: every LOG_SERVICES value). */
    readonly services?: readonly string[];
  };
  readonly grafana: Omit<GrafanaRenderInput<S>, 'prometheus' | 'loki' | 'scrapeIntervalSeconds'>;
}

/** Text files by path (all monitoring files are text; assignable to the platform's WorkloadFiles). */
export type TextFiles = Readonly<Record<string, string>>;

/**
 * What one monitoring workload needs, shaped like the components' Workload (configDir, files,
 * secretDir, secretFiles). `S` is the type of a secret value: a string here and in tests, a
 * pulumi.Output<string> in the component, which then lands in secretFiles untouched.
 */
export interface MonitoringWorkload<S = string> {
  /** Plain files, by path relative to configDir. */
  readonly files: TextFiles;
  /** Secret files, by path relative to secretDir (only Grafana has one: its admin password). */
  readonly secretFiles: Readonly<Record<string, S>>;
  /** Absolute paths inside the workload: plain files, secret files, persistent data. */
  readonly configDir: string;
  readonly secretDir: string;
  readonly dataDir: string;
  /** Arguments after the upstream image's entrypoint (prometheus, loki, alloy; Grafana's run.sh takes none). */
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** The HTTP port the workload listens on, and its readiness path (GET, 200 when ready). */
  readonly health: { readonly port: number; readonly path: string };
}

export interface RenderedMonitoring<S = string> {
  readonly prometheus: MonitoringWorkload<S>;
  readonly loki: MonitoringWorkload<S>;
  readonly alloy: MonitoringWorkload<S>;
  readonly grafana: MonitoringWorkload<S> & {
    /** Absolute path of the admin password file (the only secret); grafana.ini refers to it. */
    readonly adminPasswordFile: string;
  };
}

/** Every monitoring file, per workload. */
export function renderMonitoringFiles<S = string>(spec: PolicySpec, input: MonitoringRenderInput<S>): RenderedMonitoring<S> {
  const dirs = MONITORING_DIRS;
  const grafanaInput: GrafanaRenderInput<S> = {
    ...input.grafana,
    prometheus: input.endpoints.prometheus,
    loki: input.endpoints.loki,
    scrapeIntervalSeconds: input.prometheus.scrapeIntervalSeconds ?? 15,
  };
  const promPort = input.endpoints.prometheus.port;
  // No secrets outside Grafana; the directory exists so every workload has the same shape.
  const noSecrets = (workload: string) => ({ secretFiles: {} as Readonly<Record<string, S>>, secretDir: `/run/secrets/${workload}` });
  return {
    prometheus: {
      files: {
        [PROMETHEUS_CONFIG_FILE]: toYaml(renderPrometheusConfig(input.prometheus)),
        [PROMETHEUS_RULES_FILE]: toYaml(renderAlertRules(spec)),
      },
      ...noSecrets('prometheus'),
      configDir: dirs.prometheus.config,
      dataDir: dirs.prometheus.data,
      args: prometheusArgs({
        configDir: dirs.prometheus.config,
        dataDir: dirs.prometheus.data,
        listenPort: promPort,
        retentionDays: input.prometheus.retentionDays,
      }),
      env: {},
      health: { port: promPort, path: '/-/ready' },
    },
    loki: {
      files: { [LOKI_CONFIG_FILE]: toYaml(renderLokiConfig({ ...input.loki, dataDir: dirs.loki.data })) },
      ...noSecrets('loki'),
      configDir: dirs.loki.config,
      dataDir: dirs.loki.data,
      args: lokiArgs(dirs.loki.config),
      env: {},
      health: { port: LOKI_HTTP_PORT, path: '/ready' },
    },
    alloy: {
      files: {
        [ALLOY_CONFIG_FILE]: renderAlloyFile({
          discovery: input.alloy.discovery,
          loki: input.endpoints.loki,
          services: input.alloy.services ?? Object.values(LOG_SERVICES),
        }),
      },
      ...noSecrets('alloy'),
      configDir: dirs.alloy.config,
      dataDir: dirs.alloy.data,
      args: alloyArgs({ configDir: dirs.alloy.config, dataDir: dirs.alloy.data }),
      env: {},
      health: { port: ALLOY_HTTP_PORT, path: '/-/ready' },
    },
    grafana: {
      files: renderGrafanaFiles(spec, grafanaInput),
      secretFiles: renderGrafanaSecretFiles(grafanaInput),
      configDir: grafanaInput.configDir ?? GRAFANA_DEFAULTS.configDir,
      secretDir: grafanaInput.secretDir ?? GRAFANA_DEFAULTS.secretDir,
      dataDir: grafanaInput.dataDir ?? GRAFANA_DEFAULTS.dataDir,
      // The image's entrypoint starts grafana-server with GF_PATHS_* from the environment.
      args: [],
      env: grafanaEnv(grafanaInput),
      health: { port: grafanaInput.httpPort ?? GRAFANA_DEFAULTS.httpPort, path: '/api/health' },
      adminPasswordFile: grafanaAdminPasswordPath(grafanaInput),
    },
  };
}

/** The ports the monitoring workloads listen on, inside the platform. */
export const MONITORING_PORTS = { prometheus: 9090, grafana: GRAFANA_DEFAULTS.httpPort, loki: LOKI_HTTP_PORT, alloy: ALLOY_HTTP_PORT } as const;

/** The monitoring workloads, each also its image role. */
export const MONITORING_WORKLOADS = ['prometheus', 'loki', 'alloy', 'grafana'] as const satisfies readonly ImageRole[];

/**
 * What the overlay is rendered from, for a target: where each workload is reached, how Alloy
 * finds the platform's logs, and Grafana's admin password (`S`: a string in tests, a SecretRef
 * in the plan). Pure.
 */
function monitoringRenderInput<S>(capabilities: Pick<TargetCapabilities, 'address' | 'logDiscovery'>, adminPassword: S): MonitoringRenderInput<S> {
  const at = capabilities.address;
  return {
    endpoints: { prometheus: at('prometheus', MONITORING_PORTS.prometheus), loki: at('loki', MONITORING_PORTS.loki) },
    prometheus: {
      targets: {
        gateway: at(WORKLOADS.gateway, PORTS.envoyStats),
        egress: at(WORKLOADS.egress, PORTS.envoyStats),
        opa: at(WORKLOADS.opa, PORTS.opaDiagnostic),
        agentd: at(WORKLOADS.agentd, PORTS.agentdMetrics),
      },
      retentionDays: 15,
    },
    loki: { retentionDays: 7 },
    alloy: { discovery: capabilities.logDiscovery },
    grafana: { adminPassword },
  };
}

/**
 * Who the monitoring workloads talk to: Prometheus reaches each workload's metrics port and
 * never an API, Alloy pushes to Loki, Grafana queries Prometheus and Loki.
 */
export const MONITORING_CONNECTIONS: readonly Connection[] = [
  { from: 'prometheus', to: WORKLOADS.gateway, port: PORTS.envoyStats },
  { from: 'prometheus', to: WORKLOADS.egress, port: PORTS.envoyStats },
  { from: 'prometheus', to: WORKLOADS.opa, port: PORTS.opaDiagnostic },
  { from: 'prometheus', to: WORKLOADS.agentd, port: PORTS.agentdMetrics },
  { from: 'alloy', to: 'loki', port: MONITORING_PORTS.loki },
  { from: 'grafana', to: 'prometheus', port: MONITORING_PORTS.prometheus },
  { from: 'grafana', to: 'loki', port: MONITORING_PORTS.loki },
];

/**
 * The four monitoring workloads of the plan. Grafana and Prometheus are published (on the
 * given host ports) only where the target publishes operator UIs; elsewhere operators reach
 * them with `kubectl port-forward`.
 */
export function planMonitoring(
  spec: PolicySpec,
  capabilities: TargetCapabilities,
  hostPorts: { readonly grafana: number; readonly prometheus: number },
): PlannedWorkload[] {
  const rendered = renderMonitoringFiles<SecretRef>(spec, monitoringRenderInput(capabilities, { generated: 'grafana-admin-password' }));
  const publish = (name: 'grafana' | 'prometheus') =>
    capabilities.publishesOperatorPorts ? { publish: { port: MONITORING_PORTS[name], hostPort: hostPorts[name] } } : {};
  return MONITORING_WORKLOADS.map((name) => {
    const m: MonitoringWorkload<SecretRef> = rendered[name];
    return {
      name,
      image: name,
      args: m.args,
      env: m.env,
      configDir: m.configDir,
      files: m.files,
      secretDir: m.secretDir,
      secretFiles: m.secretFiles,
      ports: [{ name: 'http', port: m.health.port, protocol: 'http' }],
      health: m.health,
      dataVolume: { mountPath: m.dataDir },
      internet: false,
      ...(name === 'alloy' ? { readsWorkloadLogs: true } : {}),
      ...(name === 'grafana' || name === 'prometheus' ? publish(name) : {}),
      user: RUN_AS_USER,
      resources: { cpuMillis: 500, memoryMiB: 512 },
      replicas: 1,
    };
  });
}
