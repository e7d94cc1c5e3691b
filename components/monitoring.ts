import * as pulumi from '@pulumi/pulumi';
import * as random from '@pulumi/random';
import type { PolicySpec } from '../policy/spec.ts';
import { PORTS, RUN_AS_USER, WORKLOADS } from './layout.ts';
import { renderMonitoringFiles, type MonitoringRenderInput, type MonitoringWorkload } from './render/overlay/index.ts';
import { LOKI_HTTP_PORT } from './render/monitoring/loki.ts';
import { ALLOY_HTTP_PORT } from './render/monitoring/alloy.ts';
import { STACK_LABEL, WORKLOAD_LABEL } from './targets/docker.ts';
import { NAME_LABEL } from './targets/kubernetes.ts';
import type { Target } from './target.ts';
import type { Workload } from './workload.ts';

/** Upstream images of the overlay (Grafana, Loki and Alloy are not built here: AGPL). */
export const MONITORING_IMAGES = {
  prometheus: 'prom/prometheus:v3.16.0',
  loki: 'grafana/loki:3.7.0',
  alloy: 'grafana/alloy:v1.11.0',
  grafana: 'grafana/grafana:12.3.0',
} as const;

/** Each image's entrypoint (the workload's command starts with it). */
const ENTRYPOINTS = { prometheus: ['/bin/prometheus'], loki: ['/usr/bin/loki'], alloy: ['/bin/alloy'], grafana: ['/run.sh'] } as const;

export const MONITORING_PORTS = { prometheus: 9090, grafana: 3000, loki: LOKI_HTTP_PORT, alloy: ALLOY_HTTP_PORT } as const;

export interface MonitoringArgs {
  readonly target: Target;
  readonly spec: PolicySpec;
  /** Image per workload (defaults: MONITORING_IMAGES). */
  readonly images?: Partial<Record<keyof typeof MONITORING_IMAGES, string>>;
  /** Docker: the stack's prefix (logs are shipped only from this stack's containers). */
  readonly dockerPrefix?: string;
  /** Kubernetes: the platform's namespace. */
  readonly namespace?: string;
  /** Docker: host port Grafana is published at (loopback). Ignored on Kubernetes. */
  readonly grafanaHostPort?: number;
  /** Docker: host port Prometheus is published at (loopback). Ignored on Kubernetes. */
  readonly prometheusHostPort?: number;
}

const probe = (port: number, path: string) => ['wget', '-q', '-O', '/dev/null', `http://127.0.0.1:${port}${path}`];

/** One monitoring workload in the platform's Workload shape. Pure. */
export function monitoringWorkload(
  name: keyof typeof MONITORING_IMAGES,
  m: MonitoringWorkload<pulumi.Output<string>>,
  image: string,
  extra: Partial<Workload> = {},
): Workload {
  return {
    name,
    image,
    command: [...ENTRYPOINTS[name], ...m.args],
    env: m.env,
    configDir: m.configDir,
    files: m.files,
    secretDir: m.secretDir,
    secretFiles: m.secretFiles,
    ports: [{ name: 'http', port: m.health.port, protocol: 'http' }],
    health: { port: m.health.port, path: m.health.path, command: probe(m.health.port, m.health.path) },
    dataVolume: { mountPath: m.dataDir },
    talksTo: [],
    internet: false,
    user: RUN_AS_USER,
    resources: { cpuMillis: 500, memoryMiB: 512 },
    replicas: 1,
    ...extra,
  };
}

/**
 * What the overlay is rendered from, for a target: where each workload is reached, how Alloy
 * finds the platform's logs, and Grafana's admin password (`S`: a string, or a Pulumi secret).
 * Pure: the Monitoring component and `npm run render` both call it.
 */
export function monitoringRenderInput<S>(o: {
  kind: Target['kind'];
  address: Target['address'];
  dockerPrefix?: string;
  namespace?: string;
  adminPassword: S;
}): MonitoringRenderInput<S> {
  const at = o.address;
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
    alloy: {
      discovery:
        o.kind === 'docker'
          ? {
              kind: 'docker',
              host: 'unix:///var/run/docker.sock',
              serviceLabel: WORKLOAD_LABEL,
              stackLabel: { name: STACK_LABEL, value: o.dockerPrefix ?? '' },
            }
          : { kind: 'kubernetes', namespace: o.namespace ?? 'agentd', serviceLabel: NAME_LABEL },
    },
    grafana: { adminPassword: o.adminPassword },
  };
}

/**
 * The monitoring overlay: Prometheus (scraping both proxies' stats listeners, OPA and agentd,
 * with the alert rules), Loki with Alloy shipping the platform's logs, Grafana with dashboards
 * generated from the same policy data. The admin password is generated and a secret output.
 */
export class Monitoring extends pulumi.ComponentResource {
  readonly grafanaUrl: pulumi.Output<string>;
  readonly prometheusUrl: pulumi.Output<string>;
  readonly grafanaAdminPassword: pulumi.Output<string>;

  constructor(name: string, args: MonitoringArgs, opts?: pulumi.ComponentResourceOptions) {
    super('agentd:monitoring:Monitoring', name, {}, opts);
    const { target } = args;
    const password = new random.RandomPassword(`${name}-grafana-admin`, { length: 32, special: false }, { parent: this });
    this.grafanaAdminPassword = pulumi.secret(password.result);
    const at = (w: string, port: number) => target.address(w, port);
    // Only Docker publishes Grafana and Prometheus (on loopback); on Kubernetes only the gateway
    // takes traffic from outside: reach them with `kubectl port-forward`.
    const publish = target.kind === 'docker';
    const rendered = renderMonitoringFiles(
      args.spec,
      monitoringRenderInput({
        kind: target.kind,
        address: at,
        ...(args.dockerPrefix ? { dockerPrefix: args.dockerPrefix } : {}),
        ...(args.namespace ? { namespace: args.namespace } : {}),
        adminPassword: this.grafanaAdminPassword,
      }),
    );
    const image = (n: keyof typeof MONITORING_IMAGES) => args.images?.[n] ?? MONITORING_IMAGES[n];
    const prometheus = monitoringWorkload('prometheus', rendered.prometheus, image('prometheus'), {
      // Metrics ports only: Prometheus never reaches an API.
      talksTo: [
        { workload: WORKLOADS.gateway, port: PORTS.envoyStats },
        { workload: WORKLOADS.egress, port: PORTS.envoyStats },
        { workload: WORKLOADS.opa, port: PORTS.opaDiagnostic },
        { workload: WORKLOADS.agentd, port: PORTS.agentdMetrics },
      ],
      ...(publish && args.prometheusHostPort ? { publish: { port: MONITORING_PORTS.prometheus, hostPort: args.prometheusHostPort } } : {}),
    });
    const loki = monitoringWorkload('loki', rendered.loki, image('loki'));
    const alloy = monitoringWorkload('alloy', rendered.alloy, image('alloy'), {
      talksTo: [{ workload: 'loki', port: MONITORING_PORTS.loki }],
      ...(target.kind === 'docker'
        ? { hostMounts: [{ hostPath: '/var/run/docker.sock', mountPath: '/var/run/docker.sock' }], root: true }
        : { apiAccess: [{ apiGroups: [''], resources: ['pods', 'pods/log', 'namespaces'], verbs: ['get', 'list', 'watch'] }] }),
    });
    const grafana = monitoringWorkload('grafana', rendered.grafana, image('grafana'), {
      talksTo: [
        { workload: 'prometheus', port: MONITORING_PORTS.prometheus },
        { workload: 'loki', port: MONITORING_PORTS.loki },
      ],
      ...(publish && args.grafanaHostPort ? { publish: { port: MONITORING_PORTS.grafana, hostPort: args.grafanaHostPort } } : {}),
    });
    const deployed = Object.fromEntries([prometheus, loki, alloy, grafana].map((w) => [w.name, target.deploy(w, this, `${name}-${w.name}`)]));
    const url = (w: 'grafana' | 'prometheus', port: number) => {
      const inside = at(w, port);
      return (deployed[w]!.endpoint ?? pulumi.output(`${inside.host}:${inside.port}`)).apply((e) => `http://${e}`);
    };
    this.grafanaUrl = url('grafana', MONITORING_PORTS.grafana);
    this.prometheusUrl = url('prometheus', MONITORING_PORTS.prometheus);
    this.registerOutputs({ grafanaUrl: this.grafanaUrl, prometheusUrl: this.prometheusUrl, grafanaAdminPassword: this.grafanaAdminPassword });
  }
}
