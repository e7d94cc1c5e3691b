// Fixed inputs for the monitoring renderers, and helpers to run the real Prometheus and ask it
// things over its HTTP API (the binary here has no web UI assets; the API is complete).
import { join } from 'node:path';
import type { MonitoringRenderInput } from '../../components/render/overlay/index.ts';
import { ManagedProcess, answers, freePort } from '../../scripts/local/processes.ts';
import { toolPath } from '../../scripts/local/tools.ts';

/** A plain password that must never appear in a plain file. */
export const ADMIN_PASSWORD = 'grafana-admin-Pa55word-7f3c9a';

/** Docker-shaped input (DNS names of the platform's containers). */
export const dockerMonitoringInput: MonitoringRenderInput = {
  endpoints: { prometheus: { host: 'prometheus', port: 9090 }, loki: { host: 'loki', port: 3100 } },
  prometheus: {
    targets: {
      gateway: { host: 'gateway', port: 9902 },
      egress: { host: 'egress', port: 9902 },
      opa: { host: 'opa', port: 8181 },
      agentd: { host: 'agentd', port: 8090 },
    },
  },
  loki: { retentionDays: 7 },
  alloy: {
    discovery: { kind: 'docker', host: 'unix:///var/run/docker.sock', serviceLabel: 'agentd.workload', stackLabel: { name: 'agentd.stack', value: 'dev' } },
  },
  grafana: { adminPassword: ADMIN_PASSWORD },
};

/** Kubernetes-shaped input (service DNS names, several agentd replicas). */
export const kubernetesMonitoringInput: MonitoringRenderInput = {
  endpoints: { prometheus: { host: 'prometheus.agentd.svc.cluster.local', port: 9090 }, loki: { host: 'loki.agentd.svc.cluster.local', port: 3100 } },
  prometheus: {
    targets: {
      gateway: { host: 'gateway-stats.agentd.svc.cluster.local', port: 9902 },
      egress: { host: 'egress-stats.agentd.svc.cluster.local', port: 9902 },
      opa: { host: 'opa.agentd.svc.cluster.local', port: 8181 },
      agentd: [
        { host: 'agentd-0.agentd.agentd.svc.cluster.local', port: 8090 },
        { host: 'agentd-1.agentd.agentd.svc.cluster.local', port: 8090 },
      ],
    },
    scrapeIntervalSeconds: 30,
    externalLabels: { stack: 'prod' },
    alertmanagers: [{ host: 'alertmanager.monitoring.svc.cluster.local', port: 9093 }],
    retentionDays: 30,
  },
  loki: { retentionDays: 14 },
  alloy: { discovery: { kind: 'kubernetes', namespace: 'agentd', serviceLabel: 'app.kubernetes.io/name' } },
  grafana: { adminPassword: ADMIN_PASSWORD, adminUser: 'ops' },
};

/** The real Prometheus on a free loopback port, reading `configFile`. */
export async function startPrometheus(dir: string, configFile: string): Promise<{ url: string; process: ManagedProcess }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const process = new ManagedProcess(
    {
      name: 'prometheus',
      command: toolPath('prometheus'),
      args: [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
      ready: () => answers(`${url}/-/ready`),
    },
    join(dir, 'prometheus.log'),
  );
  await process.start();
  return { url, process };
}

export interface PromSample {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

/** An instant query; throws with Prometheus' error when the expression does not evaluate. */
export async function promQuery(url: string, expr: string): Promise<PromSample[]> {
  const r = await fetch(`${url}/api/v1/query`, { method: 'POST', body: new URLSearchParams({ query: expr }) });
  const body = (await r.json()) as { status: string; error?: string; data?: { resultType: string; result: PromSample[] } };
  if (body.status !== 'success') throw new Error(`query failed: ${body.error}\n  ${expr}`);
  if (body.data!.resultType !== 'vector') throw new Error(`query returned a ${body.data!.resultType}, not a vector: ${expr}`);
  return body.data!.result;
}

export interface VectorSelector {
  readonly name: string;
  readonly matchers: readonly { readonly name: string; readonly type: string; readonly value: string }[];
}

/** Every vector selector of an expression, from Prometheus' own parser (/api/v1/parse_query). */
export async function selectorsOf(url: string, expr: string): Promise<VectorSelector[]> {
  const r = await fetch(`${url}/api/v1/parse_query`, { method: 'POST', body: new URLSearchParams({ query: expr }) });
  const body = (await r.json()) as { status: string; error?: string; data?: unknown };
  if (body.status !== 'success') throw new Error(`parse failed: ${body.error}\n  ${expr}`);
  const out: VectorSelector[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      node.forEach(walk);
      return;
    }
    if (node === null || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (Array.isArray(n['matchers']) && typeof n['name'] === 'string') {
      out.push({ name: n['name'] as string, matchers: n['matchers'] as VectorSelector['matchers'] });
    }
    Object.values(n).forEach(walk);
  };
  walk(body.data);
  return out;
}

/** A selector as PromQL text (for error messages and for counting its series). */
export const selectorText = (s: VectorSelector): string => `{${s.matchers.map((m) => `${m.name}${m.type}${JSON.stringify(m.value)}`).join(',')}}`;
