// 4. Deploy: how long rendering every config takes (renderPlatform: OPA bundle, gateway and
// egress Envoy configs, OPA config) for a spec with 1,000 API keys, and the Pulumi timings.
//
// Rendering is timed twice: in fresh Node processes (the first call, as a `pulumi up` pays it:
// cold JIT, lazily loaded code) and in this process after warm-up (the steady cost). The target
// is judged on the cold median of the render's CPU time (user + system of the process during
// the call): rendering is single-threaded CPU work, so on an idle machine its wall time is at
// most that, while on a shared one the wall time mostly measures the neighbours. Both are shown.
//
// Pulumi timings need the Docker stack and are placeholders until wired in: to add one, give
// its entry in DEPLOY_MEASUREMENTS a `measure` function (and a `limitMs` if it has a target).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fileBytes, renderPlatform, type PlatformRenderInput, type RenderedPlatform } from '../../components/render/platform.ts';
import { egressInput, gatewayInput } from '../../test/support/fixtures.ts';
import { buildBundle } from '../../policy/bundle.ts';
import { renderEgressConfig } from '../../components/render/envoy/egress.ts';
import { renderGatewayConfig } from '../../components/render/envoy/gateway.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { median, summarize } from '../lib/stats.ts';
import { checkTarget, fmt, notMeasured, table, type SectionResult, type TargetCheck } from '../lib/report.ts';
import type { BenchSettings } from '../lib/settings.ts';
import { syntheticPolicy, type SyntheticPolicy } from '../lib/synthetic.ts';

const SECTION = 'Deploy';
export const RENDER_TARGET_MS = 200;

/** One deploy-time measurement. Without `measure` it is reported as not measured. */
export interface DeployMeasurement {
  readonly id: string;
  readonly description: string;
  /** A target, if the measurement has one (pass when the time is at most this). */
  readonly limitMs?: number;
  /** Why there is no number yet. */
  readonly pendingReason?: string;
  readonly measure?: () => Promise<{ readonly ms: number; readonly detail?: string }>;
}

/** The Pulumi timings. The lead wires these in (each is one `measure` function). */
export const DEPLOY_MEASUREMENTS: readonly DeployMeasurement[] = [
  { id: 'pulumi-preview', description: '`pulumi preview` of the Docker stack, nothing changed', pendingReason: 'needs the Docker stack' },
  { id: 'pulumi-up-noop', description: 'no-op `pulumi up` (second up, nothing changed)', pendingReason: 'needs the Docker stack' },
  { id: 'pulumi-up-cold', description: 'cold `pulumi up` (empty stack to a ready platform)', pendingReason: 'needs the Docker stack' },
];

/** Addresses as the Docker target gives them (the render tests' fixtures), every credential configured. */
export function renderInput(p: SyntheticPolicy): PlatformRenderInput {
  return {
    gateway: gatewayInput,
    egress: { ...egressInput, configuredCredentials: [...p.serviceIds] },
    opa: { grpc: { host: '0.0.0.0', port: 9191 }, bundlePath: '/etc/agentd/opa/agentd-bundle.tar.gz' },
    keyHashes: p.keyHashes,
  };
}

export interface ColdRender {
  readonly parseMs: number;
  readonly renderMs: number;
  readonly renderCpuMs: number;
  readonly bytes: Readonly<Record<string, number>>;
}

export function renderedSizes(r: RenderedPlatform): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [w, files] of Object.entries({ gateway: r.gateway, egress: r.egress, opa: r.opa })) {
    for (const [name, content] of Object.entries(files)) {
      // The per-service SDS files are summed into one entry.
      const key = name.includes('/') ? `${w}/${name.slice(0, name.lastIndexOf('/'))}/*` : `${w}/${name}`;
      out[key] = (out[key] ?? 0) + fileBytes(content).length;
    }
  }
  return out;
}

const CHILD = fileURLToPath(new URL('./deploy-render-child.ts', import.meta.url));

function coldRender(keys: number, services: number): Promise<ColdRender> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, String(keys), String(services)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) return reject(new Error(`render child exited ${code}: ${Buffer.concat(err).toString('utf8').slice(-2000)}`));
      resolve(JSON.parse(Buffer.concat(out).toString('utf8')) as ColdRender);
    });
  });
}

export async function deploySuite(s: BenchSettings, log: (m: string) => void): Promise<SectionResult> {
  log(`deploy: rendering every config for ${s.renderKeys} keys / ${s.renderServices} services (${s.renderColdRuns} fresh processes, ${s.renderWarmRuns} warm)`);
  const cold: ColdRender[] = [];
  for (let i = 0; i < s.renderColdRuns; i++) cold.push(await coldRender(s.renderKeys, s.renderServices));

  const t0 = performance.now();
  const policy = syntheticPolicy({ clients: s.renderKeys, services: s.renderServices });
  const parseMs = performance.now() - t0;
  const input = renderInput(policy);
  let rendered = renderPlatform(policy.spec, input);
  for (let i = 0; i < 3; i++) rendered = renderPlatform(policy.spec, input);
  const warm: number[] = [];
  for (let i = 0; i < s.renderWarmRuns; i++) {
    const t = performance.now();
    rendered = renderPlatform(policy.spec, input);
    warm.push(performance.now() - t);
  }
  const warmSummary = summarize(warm);
  // Where a render's time goes (warm): the bundle, each Envoy config (object + YAML text).
  const parts: Record<string, number[]> = { 'OPA bundle (data.json + tar.gz)': [], 'gateway envoy.yaml': [], 'egress envoy.yaml': [] };
  for (let i = 0; i < Math.max(3, Math.ceil(s.renderWarmRuns / 2)); i++) {
    const time = (k: string, f: () => unknown) => {
      const t = performance.now();
      f();
      parts[k]!.push(performance.now() - t);
    };
    time('OPA bundle (data.json + tar.gz)', () => buildBundle(policy.spec, input.keyHashes));
    time('gateway envoy.yaml', () => toYaml(renderGatewayConfig(policy.spec, input.gateway)));
    time('egress envoy.yaml', () => toYaml(renderEgressConfig(policy.spec, input.egress)));
  }
  const breakdown = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, median(v)]));
  const coldRenderMs = median(cold.map((c) => c.renderMs));
  const coldRenderCpuMs = median(cold.map((c) => c.renderCpuMs));
  const coldParseMs = median(cold.map((c) => c.parseMs));
  const sizes = renderedSizes(rendered);

  const pulumi: { id: string; description: string; ms: number | null; status: string; detail?: string }[] = [];
  const targets: TargetCheck[] = [
    checkTarget({
      id: 'deploy.render-1000-keys',
      section: SECTION,
      description: `renderPlatform, ${s.renderKeys} keys + ${s.renderServices} services (fresh process, median CPU time)`,
      value: coldRenderCpuMs,
      limit: RENDER_TARGET_MS,
      kind: 'max',
      unit: ' ms',
      digits: 1,
    }),
  ];
  for (const m of DEPLOY_MEASUREMENTS) {
    if (!m.measure) {
      const reason = m.pendingReason ?? 'not wired in';
      pulumi.push({ id: m.id, description: m.description, ms: null, status: `not measured: ${reason}` });
      targets.push(notMeasured({ id: `deploy.${m.id}`, section: SECTION, description: m.description, goal: m.limitMs ? `<= ${m.limitMs} ms` : 'to be set', reason }));
      continue;
    }
    log(`deploy: ${m.description}`);
    const r = await m.measure();
    pulumi.push({ id: m.id, description: m.description, ms: r.ms, status: 'measured', ...(r.detail ? { detail: r.detail } : {}) });
    if (m.limitMs !== undefined) {
      targets.push(checkTarget({ id: `deploy.${m.id}`, section: SECTION, description: m.description, value: r.ms, limit: m.limitMs, kind: 'max', unit: ' ms', digits: 0 }));
    }
  }

  const kib = (n: number | undefined) => (n === undefined ? 'n/a' : `${(n / 1024).toFixed(1)} KiB`);
  const markdown = [
    `Spec: ${s.renderKeys} API keys, ${s.renderServices} egress services (synthetic YAML validated by parsePolicySpec), rendered for the Docker target's addresses.`,
    '',
    table(
      ['Step', 'Median', 'Min', 'Max', 'Runs'],
      [
        ['renderPlatform, fresh process (first call), CPU time', `${fmt(coldRenderCpuMs, 1)} ms`, `${fmt(Math.min(...cold.map((c) => c.renderCpuMs)), 1)} ms`, `${fmt(Math.max(...cold.map((c) => c.renderCpuMs)), 1)} ms`, String(cold.length)],
        ['renderPlatform, fresh process (first call), wall time', `${fmt(coldRenderMs, 1)} ms`, `${fmt(Math.min(...cold.map((c) => c.renderMs)), 1)} ms`, `${fmt(Math.max(...cold.map((c) => c.renderMs)), 1)} ms`, String(cold.length)],
        ['renderPlatform, warm (same process)', `${fmt(warmSummary.p50Ms, 1)} ms`, `${fmt(Math.min(...warm), 1)} ms`, `${fmt(warmSummary.maxMs, 1)} ms`, String(warm.length)],
        ['parsePolicySpec (YAML to validated spec), fresh process', `${fmt(coldParseMs, 1)} ms`, '', '', String(cold.length)],
      ],
    ),
    '',
    `Warm breakdown (median): ${Object.entries(breakdown).map(([k, v]) => `${k} ${fmt(v, 1)} ms`).join(', ')}.`,
    '',
    `Rendered sizes: gateway envoy.yaml ${kib(sizes['gateway/envoy.yaml'])}, egress envoy.yaml ${kib(sizes['egress/envoy.yaml'])}, OPA bundle ${kib(sizes['opa/agentd-bundle.tar.gz'])} (tar.gz).`,
    '',
    table(
      ['Pulumi', 'Time', 'Status'],
      pulumi.map((p) => [p.description, p.ms === null ? '-' : `${(p.ms / 1000).toFixed(1)} s`, p.status]),
    ),
  ].join('\n');

  return {
    id: 'deploy',
    title: '4. Deploy: render time and Pulumi',
    data: {
      keys: s.renderKeys,
      services: s.renderServices,
      coldRenders: cold,
      coldRenderMedianMs: coldRenderMs,
      coldRenderCpuMedianMs: coldRenderCpuMs,
      coldParseMedianMs: coldParseMs,
      inProcessParseMs: parseMs,
      warmRenderMs: warm,
      warmRender: warmSummary,
      warmBreakdownMs: breakdown,
      renderedBytes: sizes,
      pulumi,
    },
    targets,
    markdown,
  };
}
