// 4. Deploy: how long rendering every config takes (renderPlatform: OPA bundle, gateway and
// egress Envoy configs, OPA config) for a spec with 1,000 API keys, and the Pulumi timings.
//
// Rendering is timed twice: in fresh Node processes (the first call, as a `pulumi up` pays it:
// cold JIT, lazily loaded code) and in this process after warm-up (the steady cost). The target
// is judged on the cold median of the render's CPU time (user + system of the process during
// the call): rendering is single-threaded CPU work, so on an idle machine its wall time is at
// most that, while on a shared one the wall time mostly measures the neighbours. Both are shown.
//
// The Pulumi timings are the core Docker stack for real (bench/lib/pulumi-stack.ts): a cold
// `pulumi up` from an empty stack to healthy containers (local images already built), then a
// no-op `pulumi up` and a `pulumi preview --expect-no-changes`, each repeated; wall time, median.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fileBytes, renderPlatform, type PlatformRenderInput, type RenderedPlatform } from '../../components/render/platform.ts';
import { egressInput, ephemeralBundleSigner, gatewayInput } from '../../scripts/local/fixtures.ts';
import { buildBundle } from '../../policy/bundle.ts';
import { renderEgressConfig } from '../../components/render/envoy/egress.ts';
import { renderGatewayConfig } from '../../components/render/envoy/gateway.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { median, summarize } from '../lib/stats.ts';
import { checkTarget, fmt, table, type SectionResult, type TargetCheck } from '../lib/report.ts';
import type { BenchSettings } from '../lib/settings.ts';
import { syntheticPolicy, type SyntheticPolicy } from '../lib/synthetic.ts';
import { pulumiTimings, type PulumiTiming } from '../lib/pulumi-stack.ts';

const SECTION = 'Deploy';
const RENDER_TARGET_MS = 200;

/** Addresses as the Docker target gives them (the render tests' fixtures), every credential configured. */
export function renderInput(p: SyntheticPolicy): PlatformRenderInput {
  return {
    gateway: gatewayInput,
    gatewaySecrets: { agentdTokenFile: '/run/secrets/agentd/gateway-token' },
    egress: { ...egressInput, configuredCredentials: [...p.serviceIds] },
    opa: { grpc: { host: '0.0.0.0', port: 9191 }, bundle: { url: 'http://bundles:8380' } },
    bundles: {
      listen: { traffic: { host: '0.0.0.0', port: 8380 }, adminPort: 9901, stats: { host: '0.0.0.0', port: 9902 } },
      configDir: '/etc/agentd/bundles',
    },
    keyHashes: p.keyHashes,
    // A key made for the run: signing the bundle is part of what a deploy renders.
    bundleSigner: ephemeralBundleSigner(),
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
  log(`deploy: pulumi up (cold, ${s.pulumiColdRuns}x), no-op up and preview (${s.pulumiNoopRuns}x each) of the core Docker stack`);
  const pulumi: PulumiTiming[] = await pulumiTimings({ coldRuns: s.pulumiColdRuns, noopRuns: s.pulumiNoopRuns, log });
  const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const kib = (n: number | undefined) => (n === undefined ? 'n/a' : `${(n / 1024).toFixed(1)} KiB`);
  const markdown = [
    `Spec: ${s.renderKeys} API keys, ${s.renderServices} egress services (synthetic YAML validated by parsePolicySpec), rendered for the Docker target's addresses.`,
    '',
    table(
      ['Step', 'Median', 'Min', 'Max', 'Runs'],
      [
        [
          'renderPlatform, fresh process (first call), CPU time',
          `${fmt(coldRenderCpuMs, 1)} ms`,
          `${fmt(Math.min(...cold.map((c) => c.renderCpuMs)), 1)} ms`,
          `${fmt(Math.max(...cold.map((c) => c.renderCpuMs)), 1)} ms`,
          String(cold.length),
        ],
        [
          'renderPlatform, fresh process (first call), wall time',
          `${fmt(coldRenderMs, 1)} ms`,
          `${fmt(Math.min(...cold.map((c) => c.renderMs)), 1)} ms`,
          `${fmt(Math.max(...cold.map((c) => c.renderMs)), 1)} ms`,
          String(cold.length),
        ],
        [
          'renderPlatform, warm (same process)',
          `${fmt(warmSummary.p50Ms, 1)} ms`,
          `${fmt(Math.min(...warm), 1)} ms`,
          `${fmt(warmSummary.maxMs, 1)} ms`,
          String(warm.length),
        ],
        ['parsePolicySpec (YAML to validated spec), fresh process', `${fmt(coldParseMs, 1)} ms`, '', '', String(cold.length)],
      ],
    ),
    '',
    `Warm breakdown (median): ${Object.entries(breakdown)
      .map(([k, v]) => `${k} ${fmt(v, 1)} ms`)
      .join(', ')}.`,
    '',
    `Rendered sizes: gateway envoy.yaml ${kib(sizes['gateway/envoy.yaml'])}, egress envoy.yaml ${kib(sizes['egress/envoy.yaml'])}, OPA bundle ${kib(sizes['opa/agentd-bundle.tar.gz'])} (tar.gz).`,
    '',
    `Pulumi: the core Docker stack (gateway, egress, OPA, agentd; monitoring off) from local images already built, ${pulumi[0]?.resources ?? '?'} resources, state in a local file backend; wall time of the whole command (engine start, plugin start, program, provider calls; a cold up waits until every container is healthy).`,
    '',
    table(
      ['Pulumi', 'Median', 'Min', 'Max', 'Runs'],
      pulumi.map((p) => [p.description, secs(median(p.runsMs)), secs(Math.min(...p.runsMs)), secs(Math.max(...p.runsMs)), String(p.runsMs.length)]),
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
