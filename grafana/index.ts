// The Grafana workload, rendered: grafana.ini (security settings), datasource and dashboard
// provisioning, and the dashboards (from ./dashboards/index.ts, their one entry point). The
// admin password is an input (a Pulumi secret, e.g. from @pulumi/random) that goes into one
// secret file only; grafana.ini points at that file with Grafana's `$__file{...}` expansion, so
// no plain config file ever holds it.

import type { PolicySpec } from '../policy/spec.ts';
import type { Endpoint } from '../components/render/envoy/common.ts';
import { toYaml } from '../components/render/yaml.ts';
import { HOME_DASHBOARD_FILE, renderDashboardFiles } from './dashboards/index.ts';
import { toIni } from './ini.ts';
import { GRAFANA_DATASOURCES } from '../components/render/monitoring/sources.ts';

export interface GrafanaRenderInput<S = string> {
  /** Prometheus and Loki as Grafana reaches them. */
  readonly prometheus: Endpoint;
  readonly loki: Endpoint;
  /** Prometheus' scrape interval, seconds: Grafana sizes `$__rate_interval` from it (default 15). */
  readonly scrapeIntervalSeconds?: number;
  /**
   * The admin password (secret): a string, or a pulumi.Output<string> passed through untouched.
   * Only renderGrafanaSecretFiles reads it, into GRAFANA_ADMIN_PASSWORD_FILE in secretDir.
   */
  readonly adminPassword: S;
  /** Admin user name (default `admin`). */
  readonly adminUser?: string;
  /** Where the plain files below are mounted in the Grafana workload (default /etc/grafana). */
  readonly configDir?: string;
  /** Where the secret files are mounted (default /run/secrets/grafana). */
  readonly secretDir?: string;
  /** Grafana's data directory, a volume (default /var/lib/grafana). */
  readonly dataDir?: string;
  /** The HTTP port Grafana listens on (default 3000). */
  readonly httpPort?: number;
}

export const GRAFANA_DEFAULTS = {
  configDir: '/etc/grafana',
  secretDir: '/run/secrets/grafana',
  dataDir: '/var/lib/grafana',
  httpPort: 3000,
  adminUser: 'admin',
} as const;

/** File names, relative to configDir (plain) and secretDir (secret). */
export const GRAFANA_FILES = {
  ini: 'grafana.ini',
  datasources: 'provisioning/datasources/agentd.yaml',
  dashboardProvider: 'provisioning/dashboards/agentd.yaml',
  dashboardsDir: 'dashboards',
} as const;
export const GRAFANA_ADMIN_PASSWORD_FILE = 'admin-password';

/** The parts of the input every plain file may depend on (never the password). */
type PlainInput = Omit<GrafanaRenderInput<unknown>, 'adminPassword'>;

const resolved = (input: PlainInput) => ({
  configDir: (input.configDir ?? GRAFANA_DEFAULTS.configDir).replace(/\/+$/, ''),
  secretDir: (input.secretDir ?? GRAFANA_DEFAULTS.secretDir).replace(/\/+$/, ''),
  dataDir: (input.dataDir ?? GRAFANA_DEFAULTS.dataDir).replace(/\/+$/, ''),
  httpPort: input.httpPort ?? GRAFANA_DEFAULTS.httpPort,
  adminUser: input.adminUser ?? GRAFANA_DEFAULTS.adminUser,
});

const url = (e: Endpoint) => `http://${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;

/** Absolute path of the admin password file inside the Grafana workload. */
export const grafanaAdminPasswordPath = (input: PlainInput): string => `${resolved(input).secretDir}/${GRAFANA_ADMIN_PASSWORD_FILE}`;

/** grafana.ini's sections: logins only, no anonymous access, no sign-up, no phoning home. */
function grafanaIni(input: PlainInput) {
  const r = resolved(input);
  return {
    server: { http_port: r.httpPort },
    security: {
      admin_user: r.adminUser,
      // Read from the secret file when Grafana first creates its database.
      admin_password: `$__file{${grafanaAdminPasswordPath(input)}}`,
      disable_gravatar: true,
      cookie_samesite: 'strict',
    },
    'auth.anonymous': { enabled: false },
    'auth.basic': { enabled: true },
    users: { allow_sign_up: false, allow_org_create: false },
    snapshots: { external_enabled: false },
    analytics: { reporting_enabled: false, check_for_updates: false, check_for_plugin_updates: false },
    news: { news_feed_enabled: false },
    log: { mode: 'console', level: 'warn' },
    dashboards: { default_home_dashboard_path: `${r.configDir}/${GRAFANA_FILES.dashboardsDir}/${HOME_DASHBOARD_FILE}` },
  } as const;
}

/**
 * Environment for the Grafana workload. The official image sets GF_PATHS_* itself, and
 * environment beats grafana.ini, so the paths are given here, where they win.
 */
export function grafanaEnv(input: PlainInput): Record<string, string> {
  const r = resolved(input);
  return {
    GF_PATHS_CONFIG: `${r.configDir}/${GRAFANA_FILES.ini}`,
    GF_PATHS_DATA: r.dataDir,
    GF_PATHS_PROVISIONING: `${r.configDir}/provisioning`,
  };
}

/**
 * Grafana's plain (non-secret) files, by path relative to configDir. The type keeps the
 * password out: these files cannot depend on it.
 */
export function renderGrafanaFiles(spec: PolicySpec, input: PlainInput): Record<string, string> {
  const r = resolved(input);
  const datasources = {
    apiVersion: 1,
    datasources: [
      {
        name: 'Prometheus',
        uid: GRAFANA_DATASOURCES.prometheus.uid,
        type: GRAFANA_DATASOURCES.prometheus.type,
        access: 'proxy',
        url: url(input.prometheus),
        isDefault: true,
        editable: false,
        jsonData: { timeInterval: `${input.scrapeIntervalSeconds ?? 15}s`, httpMethod: 'POST' },
      },
      {
        name: 'Loki',
        uid: GRAFANA_DATASOURCES.loki.uid,
        type: GRAFANA_DATASOURCES.loki.type,
        access: 'proxy',
        url: url(input.loki),
        isDefault: false,
        editable: false,
        jsonData: { maxLines: 1000 },
      },
    ],
  };
  const provider = {
    apiVersion: 1,
    providers: [
      {
        name: 'agentd',
        orgId: 1,
        folder: 'agentd',
        folderUid: 'agentd',
        type: 'file',
        // Dashboards are code: the UI can neither delete nor change them.
        disableDeletion: true,
        allowUiUpdates: false,
        updateIntervalSeconds: 60,
        options: { path: `${r.configDir}/${GRAFANA_FILES.dashboardsDir}`, foldersFromFilesStructure: false },
      },
    ],
  };
  const files: Record<string, string> = {
    [GRAFANA_FILES.ini]: toIni(grafanaIni(input)),
    [GRAFANA_FILES.datasources]: toYaml(datasources),
    [GRAFANA_FILES.dashboardProvider]: toYaml(provider),
  };
  for (const [file, json] of Object.entries(renderDashboardFiles(spec))) files[`${GRAFANA_FILES.dashboardsDir}/${file}`] = json;
  return files;
}

/**
 * Grafana's secret files, by path relative to secretDir: the admin password, nothing else. A
 * string password is checked here; an Output is passed through (the component's random
 * password is long enough by construction).
 */
export function renderGrafanaSecretFiles<S>(input: Pick<GrafanaRenderInput<S>, 'adminPassword'>): Record<string, S> {
  const pw: unknown = input.adminPassword;
  if (typeof pw === 'string') {
    if (pw.length < 8) throw new Error('the Grafana admin password must have at least 8 characters');
    if (/[\r\n]/.test(pw)) throw new Error('the Grafana admin password must be one line');
  }
  // Written as given, without a trailing newline: Grafana would read it as part of the password.
  return { [GRAFANA_ADMIN_PASSWORD_FILE]: input.adminPassword };
}
