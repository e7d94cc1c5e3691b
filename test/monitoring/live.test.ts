// The monitoring configs against the real platform: the harness (gateway Envoy, egress Envoy,
// OPA, agentd, stand-in upstream) and the real Prometheus, scraping with the rendered config.
// After traffic through both proxies, every PromQL expression of every dashboard and alert rule
// must evaluate, every metric it selects must exist with the labels it selects on, and the core
// panels must show data. A renamed stat prefix, cluster, label or metric fails here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALERT_NAMES, renderAlertRules } from '../../components/render/monitoring/alerts.ts';
import { JOBS, PROMETHEUS_CONFIG_FILE, PROMETHEUS_RULES_FILE, renderPrometheusConfig } from '../../components/render/monitoring/prometheus.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { dashboardQueries, renderDashboards, type Dashboard, type PanelQuery } from '../../grafana/dashboards/index.ts';
import { GRAFANA_DATASOURCES } from '../../components/render/monitoring/sources.ts';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { OPA_BUNDLE_FILE } from '../../components/render/opa.ts';
import { buildBundle, sha256Hex } from '../../policy/bundle.ts';
import { AgentdGrpc, egressCall, rawRequest } from '../../scripts/local/clients.ts';
import { sleep, type ManagedProcess } from '../../scripts/local/processes.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { promQuery, selectorText, selectorsOf, startPrometheus, type PromSample } from './support.ts';

const spec = shippedSpec();
const dashboards = renderDashboards(spec);
const rules = renderAlertRules(spec);
/** Grafana's rate window, as Grafana would substitute it for a 1 s scrape interval and a short range. */
const RATE_WINDOW = '1m';
const forPrometheus = (expr: string) => expr.replaceAll('$__rate_interval', RATE_WINDOW);

let stack: Stack;
let prom: { url: string; process: ManagedProcess };
let rpc: AgentdGrpc;

const api = (method: string, path: string, key: string, body?: object) =>
  rawRequest(stack.ports.gateway, {
    method,
    path,
    headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });

async function sandbox(tier: string): Promise<{ id: string; token: string }> {
  const r = await api('POST', '/api/v1/sandboxes', stack.apiKeys['admin']!, { tier });
  expect(r.status, r.body).toBe(201);
  return r.json();
}

/** A method and a concrete path each service allows (`*` and `**` filled in). */
const allowedCall = (id: string) => {
  const s = spec.egressServices[id]!;
  return { method: s.allowedMethods[0]!, path: s.allowedPaths[0]!.source.replace('/**', '/x/y').replaceAll('*', 'x') };
};

/** Normal traffic through both proxies: API calls, gRPC, intents to every service, denials, limits. */
async function traffic(): Promise<void> {
  const keys = stack.apiKeys;
  expect((await api('GET', '/api/v1/status', keys['admin']!)).status).toBe(200);
  expect((await api('GET', '/api/v1/status', 'agk_not-a-key')).status).toBe(401);
  expect((await api('POST', '/api/v1/status', keys['dashboard']!)).status).toBe(403);
  expect((await rpc.call('Status', {}, keys['admin'])).ok).toBe(true);
  // The dashboard key's tier admits 60 a minute: the rest are rate-limited.
  const statuses: number[] = [];
  for (let i = 0; i < 65; i++) statuses.push((await api('GET', '/api/v1/status', keys['dashboard']!)).status);
  expect(statuses).toContain(429);

  const admin = await sandbox('admin');
  for (const id of Object.keys(spec.egressServices)) {
    const { method, path } = allowedCall(id);
    const r = await api('POST', `/api/v1/sandboxes/${admin.id}/intents`, keys['admin']!, {
      capability: 'http_fetch',
      params: { service: id, method, path, ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : {}) },
    });
    expect(r.status, r.body).toBe(200);
    expect(r.json().status, `${id} ${method} ${path}`).toBe(200);
    if (spec.egressServices[id]!.llmApi) {
      // An LLM answer reporting its usage, which the egress proxy meters.
      const llm = await api('POST', `/api/v1/sandboxes/${admin.id}/intents`, keys['admin']!, {
        capability: 'http_fetch',
        params: {
          service: id,
          method: 'POST',
          path,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'm1', standin_usage: { input: 3, output: 4 } }),
        },
      });
      expect(llm.json().status, llm.body).toBe(200);
    }
    // And directly, as a sandbox would: allowed for admin, denied for the default tier (no services).
    expect((await egressCall(stack.ports.egress, id, admin.token, { method, path })).status).toBe(200);
  }
  const none = await sandbox('default');
  for (const id of Object.keys(spec.egressServices)) {
    expect((await egressCall(stack.ports.egress, id, none.token, allowedCall(id))).status, id).toBe(403);
  }
  // The restricted tier admits 10 a minute on httpbin.
  const restricted = await sandbox('restricted');
  const limited: number[] = [];
  for (let i = 0; i < 12; i++) limited.push((await egressCall(stack.ports.egress, 'httpbin', restricted.token, { path: '/get' })).status);
  expect(limited).toContain(429);
}

/** Failures: the upstream unreachable (503 per service), OPA down (503, ext_authz errors). */
async function failures(): Promise<void> {
  const admin = await sandbox('admin');
  await stack.upstream.stop();
  for (const id of Object.keys(spec.egressServices)) {
    expect((await egressCall(stack.ports.egress, id, admin.token, allowedCall(id))).status, id).toBe(503);
  }
  await stack.upstream.start(stack.ca, stack.ports.upstream);
  expect((await egressCall(stack.ports.egress, 'httpbin', admin.token, { path: '/status/502' })).status).toBe(502);

  await stack.processes.opa.stop();
  expect((await api('GET', '/api/v1/status', stack.apiKeys['admin']!)).status).toBe(503);
  expect((await egressCall(stack.ports.egress, 'httpbin', admin.token, { path: '/get' })).status).toBe(503);
  await stack.processes.opa.start();

  // An unsigned bundle from the bundle server: OPA refuses it (bundle_failed_load_counter), then gets the signed one back.
  const deployed = readFileSync(join(stack.dir, 'bundles', OPA_BUNDLE_FILE));
  const unsigned = buildBundle(spec, Object.fromEntries(Object.entries(stack.apiKeys).map(([id, k]) => [id, sha256Hex(k)])));
  const refusals = () => (readFileSync(stack.processes.opa.logFile, 'utf8').match(/Bundle load failed: bundle missing \.signatures\.json file/g) ?? []).length;
  const before = refusals();
  await stack.serveBundle(unsigned.bytes, 'unsigned');
  await waitUntil('OPA refuses the unsigned bundle', async () => refusals() > before);
  await stack.serveBundle(deployed, stack.rendered.policyRevision);
}

async function waitUntil(what: string, f: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await f().catch(() => false)) return;
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}; prometheus log:\n${prom.process.tail(20)}`);
}

const upJobs = async () => new Set((await promQuery(prom.url, 'up == 1')).map((s) => s.metric['job']));

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-mon-live-'));
  stack = await startStack({ spec, dir });
  rpc = new AgentdGrpc(stack.gatewayGrpc);
  const loop = (port: number) => ({ host: '127.0.0.1', port });
  const config = renderPrometheusConfig({
    targets: {
      gateway: loop(stack.ports.gatewayStats),
      egress: loop(stack.ports.egressStats),
      opa: loop(stack.ports.opaHttp),
      agentd: loop(stack.ports.agentdMetrics),
    },
    scrapeIntervalSeconds: 1,
  });
  const promDir = join(dir, 'prometheus');
  mkdirSync(promDir, { recursive: true });
  writeFileSync(join(promDir, PROMETHEUS_CONFIG_FILE), toYaml(config));
  writeFileSync(join(promDir, PROMETHEUS_RULES_FILE), toYaml(rules));
  prom = await startPrometheus(promDir, join(promDir, PROMETHEUS_CONFIG_FILE));

  // A first scrape of every target before any traffic, so rates have a baseline.
  await waitUntil('every target up', async () => (await upJobs()).size === Object.keys(JOBS).length);
  await failures();
  await traffic();
  // Series that appeared in the first round need a second sample to have a rate.
  await sleep(2500);
  await waitUntil('every target up again (OPA restarted)', async () => (await upJobs()).size === Object.keys(JOBS).length);
  await traffic();
  await sleep(3000);
}, 120_000);

afterAll(async () => {
  rpc?.close();
  await prom?.process.stop();
  await stack?.stop();
});

/** Every PromQL expression of the overlay, with where it comes from. */
function allExpressions(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const d of Object.values(dashboards)) {
    for (const { panel, target } of dashboardQueries(d)) {
      if (target.datasource.uid === GRAFANA_DATASOURCES.prometheus.uid) out.push({ where: `${d.uid} / ${panel.title} / ${target.refId}`, expr: target.expr });
    }
  }
  for (const r of rules.groups.flatMap((g) => g.rules)) out.push({ where: `alert ${r.alert}`, expr: r.expr });
  return out;
}

describe('Prometheus on the running platform', () => {
  it('scrapes all four jobs with the rendered config', async () => {
    expect([...(await upJobs())].sort()).toEqual(Object.values(JOBS).sort());
  });

  it('every dashboard and alert expression evaluates without error', async () => {
    const exprs = allExpressions();
    expect(exprs.length).toBeGreaterThan(50);
    const failures: string[] = [];
    for (const { where, expr } of exprs) {
      try {
        await promQuery(prom.url, forPrometheus(expr));
      } catch (e) {
        failures.push(`${where}: ${(e as Error).message}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('every metric an expression selects exists, with the labels it selects on', async () => {
    const missing: string[] = [];
    const seen = new Map<string, boolean>();
    for (const { where, expr } of allExpressions()) {
      for (const sel of await selectorsOf(prom.url, forPrometheus(expr))) {
        const text = selectorText(sel);
        if (!seen.has(text)) seen.set(text, (await promQuery(prom.url, `count(${text})`)).length > 0);
        if (!seen.get(text)) missing.push(`${where}: ${text}`);
      }
    }
    expect(seen.size).toBeGreaterThan(30);
    expect(missing).toEqual([]);
  });

  it('the existence check catches drift: a renamed prefix, label or metric selects nothing', async () => {
    for (const drifted of [
      'sum(rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="gateway_v2"}[1m]))',
      'sum by (outcome) (rate(agentd_intent_total[1m]))',
      'sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="svc_openai"}[1m]))',
      'sum(rate(envoy_http_ext_authz_denied{ext_authz_prefix="gateway_authz"}[1m]))',
    ]) {
      const sels = await selectorsOf(prom.url, drifted);
      expect(sels.length).toBe(1);
      expect((await promQuery(prom.url, `count(${selectorText(sels[0]!)})`)).length, drifted).toBe(0);
    }
  });

  it('a policy bundle OPA refused shows in PolicyBundleRefused, with why', async () => {
    const rule = rules.groups.flatMap((g) => g.rules).find((r) => r.alert === 'PolicyBundleRefused')!;
    const samples = await promQuery(prom.url, rule.expr);
    expect(samples.map((x) => [x.metric['name'], x.metric['code'], x.metric['message']])).toEqual([
      ['agentd', 'bundle_error', 'bundle missing .signatures.json file'],
    ]);
  });

  it('evaluates every alert rule without error', async () => {
    const r = await fetch(`${prom.url}/api/v1/rules?type=alert`);
    const groups = ((await r.json()) as { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } }).data.groups;
    const evaluated = groups.flatMap((g) => g.rules);
    expect(evaluated.map((x) => x.name).sort()).toEqual([...ALERT_NAMES].sort());
    for (const x of evaluated) expect([x.name, x.health, x.lastError ?? '']).toEqual([x.name, 'ok', '']);
  });
});

/** The queries of one panel, found by dashboard uid and title. */
function panel(d: Dashboard, title: string): PanelQuery[] {
  const found = dashboardQueries(d).filter((q) => q.panel.title === title);
  if (found.length === 0) throw new Error(`no panel "${title}" in ${d.uid}`);
  if (found.some((q) => q.target.datasource.uid !== GRAFANA_DATASOURCES.prometheus.uid))
    throw new Error(`panel "${title}" of ${d.uid} is not a Prometheus panel`);
  return found.map((q) => q.target);
}

const evalPanel = async (d: Dashboard, title: string): Promise<PromSample[][]> =>
  Promise.all(panel(d, title).map((t) => promQuery(prom.url, forPrometheus(t.expr))));

const positive = (samples: PromSample[]) => samples.filter((s) => Number(s.value[1]) > 0);

describe('dashboard legends', () => {
  it('every {{label}} of a legend is a label of the series the query returns', async () => {
    const wrong: string[] = [];
    for (const d of Object.values(dashboards)) {
      for (const { panel: p, target } of dashboardQueries(d)) {
        if (target.datasource.uid !== GRAFANA_DATASOURCES.prometheus.uid) continue;
        const labels = [...(target.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!);
        if (labels.length === 0) continue;
        const samples = await promQuery(prom.url, forPrometheus(target.expr));
        if (samples.length === 0) wrong.push(`${d.uid} / ${p.title}: no series to check the legend against`);
        for (const sample of samples) {
          for (const l of labels) if (!(l in sample.metric)) wrong.push(`${d.uid} / ${p.title}: legend label ${l} not in ${JSON.stringify(sample.metric)}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });
});

describe('core panels show data', () => {
  it('gateway: requests by status class (2xx, 4xx and 5xx)', async () => {
    const [byClass] = await evalPanel(dashboards['gateway']!, 'Requests by status class');
    expect(
      positive(byClass!)
        .map((s) => s.metric['envoy_response_code_class'])
        .sort(),
    ).toEqual(expect.arrayContaining(['2', '4']));
    const [latency] = await evalPanel(dashboards['gateway']!, 'Latency');
    expect(positive(latency!).length).toBe(1);
    const authz = await evalPanel(dashboards['gateway']!, 'Authorization (OPA)');
    expect(positive(authz[0]!).length, 'allowed').toBe(1);
    expect(positive(authz[1]!).length, 'denied').toBe(1);
    const limits = await evalPanel(dashboards['gateway']!, 'Rate limiting');
    expect(positive(limits[1]!).length, 'rate-limited').toBe(1);
  });

  it('egress: requests per service, for every service of the spec', async () => {
    const [byService] = await evalPanel(dashboards['egress']!, 'Requests by service');
    expect(
      positive(byService!)
        .map((s) => s.metric['service'])
        .sort(),
    ).toEqual(Object.keys(spec.egressServices).sort());
    for (const id of Object.keys(spec.egressServices)) {
      const [classes] = await evalPanel(dashboards['egress']!, `${id}: requests by status class`);
      expect(
        positive(classes!).map((s) => s.metric['envoy_response_code_class']),
        id,
      ).toContain('2');
      const [agentdView] = await evalPanel(dashboards['egress']!, `${id}: as agentd sees it`);
      expect(
        positive(agentdView!).map((s) => s.metric['status']),
        id,
      ).toContain('200');
      const [p50] = await evalPanel(dashboards['egress']!, `${id}: upstream latency`);
      expect(positive(p50!).length, id).toBe(1);
    }
  });

  it('agentd: intents by outcome, active sandboxes, version', async () => {
    const [outcomes] = await evalPanel(dashboards['agentd']!, 'Intents by outcome');
    expect(positive(outcomes!).map((s) => s.metric['outcome'])).toContain('ok');
    const [active] = await evalPanel(dashboards['agentd']!, 'Active sandboxes');
    expect(positive(active!).length).toBe(1);
    const [version] = await evalPanel(dashboards['agentd']!, 'Version');
    expect(version![0]?.metric['version']).toMatch(/\d+\.\d+/);
  });

  it('OPA: decisions for both proxies, decision latency, bundle revision', async () => {
    const [allowed, denied] = await evalPanel(dashboards['opa']!, 'Decisions by proxy');
    expect(
      positive(allowed!)
        .map((s) => s.metric['envoy_ext_authz_prefix'])
        .sort(),
    ).toEqual(['egress_authz', 'gateway_authz']);
    expect(
      positive(denied!)
        .map((s) => s.metric['envoy_ext_authz_prefix'])
        .sort(),
    ).toEqual(['egress_authz', 'gateway_authz']);
    const [p50] = await evalPanel(dashboards['opa']!, 'Decision latency (as Envoy waits for it)');
    expect(
      positive(p50!)
        .map((s) => s.metric['job'])
        .sort(),
    ).toEqual([JOBS.egress, JOBS.gateway].sort());
    const [revision] = await evalPanel(dashboards['opa']!, 'Bundle revision');
    // The revision on the dashboard is the bundle's content hash, as rendered.
    expect(revision![0]?.metric['active_revision']).toBe(stack.rendered.policyRevision);
  });

  it('overview: every component up', async () => {
    const [up] = await evalPanel(dashboards['overview']!, 'Up');
    expect(Object.fromEntries(up!.map((s) => [s.metric['job'], s.value[1]]))).toEqual(Object.fromEntries(Object.values(JOBS).map((j) => [j, '1'])));
  });
});
