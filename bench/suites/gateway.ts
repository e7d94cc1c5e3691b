// 1. Gateway overhead: the same GET /api/v1/status
//   (a) straight to agentd,
//   (b) through an Envoy with the gateway's config minus ext_authz and local_ratelimit,
//   (c) through the full gateway (ext_authz to OPA + per-key rate limit), with the `admin`
//       client's key (tier `unlimited`: the rate-limit filter runs, no bucket ever empties).
// Every variant gets the same request bytes (the key header included; (a) and (b) ignore it).
// Fixed rates: open-loop runs, rounds rotate the variant order; overheads are the median over
// rounds of the per-round difference, so a noisy moment hits both sides of a pair alike.
// Max throughput: autocannon, closed loop.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { STATUS_PATH } from '../../agentd/src/contract.ts';
import { DEFAULT_PROXY_LIMITS, LIVE_FILES, envoyArgs, liveProxyConfig, type Endpoint } from '../../components/render/envoy/common.ts';
import { GATEWAY_STAT_PREFIX, renderGatewayConfig, type GatewayRenderInput } from '../../components/render/envoy/gateway.ts';
import { ENVOY_CONFIG_FILE, GATEWAY_SDS_FILES } from '../../components/render/platform.ts';
import { toYaml } from '../../components/render/yaml.ts';
import { rawRequest } from '../../scripts/local/clients.ts';
import { ManagedProcess, answers, freePort } from '../../scripts/local/processes.ts';
import type { StackPorts } from '../../scripts/local/stack.ts';
import { toolPath } from '../../scripts/local/tools.ts';
import { interleavedRounds, withCpu, type StackContext } from '../lib/context.ts';
import { maxLoad, rateLoad, type HttpRequestSpec, type MaxLoadResult, type RateLoadResult } from '../lib/load.ts';
import { checkTarget, fmt, fmtDelta, table, type SectionResult } from '../lib/report.ts';
import { median, medianSummary, rotate, type LatencySummary } from '../lib/stats.ts';

const SECTION = 'Gateway';
const GATEWAY_P50_OVERHEAD_MS = 1;
const GATEWAY_P99_OVERHEAD_MS = 3;
const GATEWAY_THROUGHPUT_RATIO = 0.7;
/** The filters variant (b) goes without. */
const AUTHZ_FILTERS = ['envoy.filters.http.ext_authz', 'envoy.filters.http.local_ratelimit'] as const;

const loopback = (port: number): Endpoint => ({ host: '127.0.0.1', port });

/** The gateway input scripts/local/stack.ts renders with (checked against its output below). */
function harnessGatewayInput(dir: string, ports: StackPorts, listen?: { traffic: number; admin: number; stats: number }): GatewayRenderInput {
  return {
    listen: {
      traffic: loopback(listen?.traffic ?? ports.gateway),
      adminPort: listen?.admin ?? ports.gatewayAdmin,
      stats: loopback(listen?.stats ?? ports.gatewayStats),
    },
    agentdHttp: loopback(ports.agentdHttp),
    agentdGrpc: loopback(ports.agentdGrpc),
    opa: loopback(ports.opaGrpc),
    maxRequestBytes: 64 * 1024,
    upstreamTimeoutSeconds: 30,
    agentdTokenSdsFile: join(dir, 'gateway-live', GATEWAY_SDS_FILES.agentdToken),
    limits: DEFAULT_PROXY_LIMITS,
  };
}

/**
 * renderGatewayConfig's output without ext_authz and local_ratelimit (filters and per-route/vhost
 * configs), and without the early removal of x-agentd-* headers: (b) passes on the identity
 * headers its client sends, as (c) passes on OPA's.
 */
function withoutAuthz(config: object): object {
  let removed = 0;
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (!v || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (k === 'http_filters' && Array.isArray(x)) {
        const kept = x.filter((f: { name?: string }) => !AUTHZ_FILTERS.includes(f.name as never));
        removed += x.length - kept.length;
        out[k] = kept.map(strip);
      } else if (k === 'early_header_mutation_extensions') {
        removed++;
      } else if (k === 'typed_per_filter_config' && x && typeof x === 'object') {
        const kept = Object.entries(x).filter(([name]) => !AUTHZ_FILTERS.includes(name as never));
        if (kept.length > 0) out[k] = strip(Object.fromEntries(kept));
      } else {
        out[k] = strip(x);
      }
    }
    return out;
  };
  const result = strip(config) as object;
  if (removed === 0) throw new Error(`the gateway config has none of ${AUTHZ_FILTERS.join(', ')} any more: variant (b) would equal (c)`);
  return result;
}

/** Starts variant (b): the harness's gateway config minus authz, on its own ports, like the harness starts Envoy. */
async function startPlainEnvoy(ctx: StackContext): Promise<{ process: ManagedProcess; port: number }> {
  const { stack, spec } = ctx;
  // The harness's gateway loads its listeners live (lds.yaml): the same listeners as rendered here.
  const live = liveProxyConfig(renderGatewayConfig(spec, harnessGatewayInput(stack.dir, stack.ports)), join(stack.dir, 'gateway-live'), [
    `${GATEWAY_STAT_PREFIX}_stats`,
  ]);
  if (toYaml(live.lds) !== stack.rendered.live?.gateway[LIVE_FILES.lds]) {
    throw new Error('bench/suites/gateway.ts no longer renders what scripts/local/stack.ts renders for the gateway: update harnessGatewayInput()');
  }
  const ports = { traffic: await freePort(), admin: await freePort(), stats: await freePort() };
  const dir = join(ctx.workDir, 'gateway-noauthz');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, ENVOY_CONFIG_FILE);
  writeFileSync(file, toYaml(withoutAuthz(renderGatewayConfig(spec, harnessGatewayInput(stack.dir, stack.ports, ports)))));
  const p = new ManagedProcess(
    {
      name: 'gateway-noauthz',
      command: toolPath('envoy'),
      args: [...envoyArgs(file), '--use-dynamic-base-id', '--concurrency', '1'],
      ready: () => answers(`http://127.0.0.1:${ports.admin}/ready`),
    },
    join(dir, 'envoy.log'),
  );
  ctx.track(p);
  await p.start();
  return { process: p, port: ports.traffic };
}

interface Variant {
  readonly id: 'direct' | 'envoy' | 'gateway';
  readonly label: string;
  readonly port: number;
  /** What the client sends: (a) and (b) the headers the gateway would send agentd, (c) an API key. */
  readonly headers: Readonly<Record<string, string>>;
}

type Pair = 'envoy-direct' | 'gateway-envoy' | 'gateway-direct';
const PAIRS: readonly { id: Pair; a: Variant['id']; b: Variant['id']; label: string }[] = [
  { id: 'gateway-direct', a: 'gateway', b: 'direct', label: '(c) - (a): whole gateway' },
  { id: 'envoy-direct', a: 'envoy', b: 'direct', label: '(b) - (a): the Envoy hop' },
  { id: 'gateway-envoy', a: 'gateway', b: 'envoy', label: '(c) - (b): ext_authz + rate limit' },
];

export async function gatewaySuite(ctx: StackContext): Promise<SectionResult> {
  const { stack, settings: s } = ctx;
  const plain = await startPlainEnvoy(ctx);
  try {
    const key = stack.apiKeys['admin'];
    if (!key) throw new Error('the shipped policy has no `admin` client (unlimited tier) any more');
    const variants: readonly Variant[] = [
      { id: 'direct', label: '(a) agentd direct', port: stack.ports.agentdHttp, headers: stack.asGateway },
      { id: 'envoy', label: '(b) Envoy, no ext_authz / rate limit', port: plain.port, headers: stack.asGateway },
      { id: 'gateway', label: '(c) full gateway', port: stack.ports.gateway, headers: { 'x-api-key': key } },
    ];
    const requestFor = (v: Variant): HttpRequestSpec => ({ method: 'GET', path: STATUS_PATH, headers: { ...v.headers, accept: 'application/json' } });

    // The variants are what they claim: all answer 200; only (c) asks for a key.
    for (const v of variants) {
      const r = await rawRequest(v.port, { path: STATUS_PATH, headers: { ...v.headers } });
      if (r.status !== 200 || !r.json().version) throw new Error(`${v.label}: GET ${STATUS_PATH} answered ${r.status} ${r.body.slice(0, 200)}`);
    }
    const noKey = await rawRequest(stack.ports.gateway, { path: STATUS_PATH });
    if (noKey.status !== 401) throw new Error(`without a key, expected 401 from (c), got ${noKey.status}`);

    const pids = {
      'gateway Envoy': stack.processes.gateway.pid,
      'Envoy (no authz)': plain.process.pid,
      OPA: stack.processes.opa.pid,
      agentd: stack.processes.agentd.pid,
    };
    ctx.sampler.setPhase('gateway');

    // Fixed rates.
    type Run = { latency: LatencySummary; result: RateLoadResult; cpu: Record<string, number>; schedulerLagP99Ms: number };
    const runs: Record<number, Record<Variant['id'], Run[]>> = {};
    const stalls: Record<number, { discardedRounds: number; stalledRoundsKept: number }> = {};
    for (const rate of s.gatewayRates) {
      const out = await interleavedRounds<Variant, Run>({
        rounds: s.rounds,
        variants,
        maxRetries: s.stallRetries,
        log: ctx.log,
        quiet: ctx.quiet,
        run: async (v, r, attempt) => {
          ctx.log(`gateway: ${rate} req/s, round ${r + 1}/${s.rounds}${attempt ? ` (again)` : ''}, ${v.label}`);
          const { result, cpuUsPerRequest } = await withCpu(
            pids,
            (x) => x.sent,
            () =>
              rateLoad(
                {
                  target: loopback(v.port),
                  requests: [requestFor(v)],
                  rate,
                  warmupMs: s.warmupMs,
                  durationMs: s.durationMs,
                  initialConnections: 4,
                  maxConnections: 64,
                  expectStatus: 200,
                  expectBody: ['"version"'],
                  timeoutMs: 10_000,
                },
                `gateway ${v.label} at ${rate} req/s`,
              ),
          );
          return { latency: result.latency, result, cpu: cpuUsPerRequest, schedulerLagP99Ms: result.schedulerLagP99Ms };
        },
      });
      runs[rate] = out.byVariant as Record<Variant['id'], Run[]>;
      stalls[rate] = { discardedRounds: out.discardedRounds, stalledRoundsKept: out.stalledRoundsKept };
    }

    // Maximum throughput.
    const max: Record<Variant['id'], { result: MaxLoadResult; cpu: Record<string, number> }[]> = { direct: [], envoy: [], gateway: [] };
    for (let r = 0; r < s.maxRounds; r++) {
      await ctx.quiet.wait(ctx.log);
      for (const v of rotate(variants, r)) {
        ctx.log(`gateway: max throughput, round ${r + 1}/${s.maxRounds}, ${v.label}`);
        const spec = { target: loopback(v.port), requests: [requestFor(v)], connections: s.maxConnections, expectStatus: 200, timeoutMs: 10_000 };
        await maxLoad({ ...spec, warmupMs: 0, durationMs: s.maxWarmupMs }, `gateway ${v.label} warm-up`);
        const { result, cpuUsPerRequest } = await withCpu(
          pids,
          (x) => x.ok,
          () => maxLoad({ ...spec, warmupMs: 0, durationMs: s.maxDurationMs }, `gateway ${v.label} max`),
        );
        max[v.id].push({ result, cpu: cpuUsPerRequest });
      }
    }
    ctx.sampler.setPhase(undefined);

    // Summaries.
    const fixed = Object.fromEntries(
      s.gatewayRates.map((rate) => {
        const byVariant = Object.fromEntries(variants.map((v) => [v.id, medianSummary(runs[rate]![v.id].map((x) => x.latency))])) as Record<
          Variant['id'],
          LatencySummary
        >;
        const overheads = Object.fromEntries(
          PAIRS.map((p) => {
            const per = (k: 'p50Ms' | 'p90Ms' | 'p99Ms') => runs[rate]![p.a].map((x, i) => x.latency[k] - runs[rate]![p.b][i]!.latency[k]);
            return [
              p.id,
              {
                p50Ms: median(per('p50Ms')),
                p90Ms: median(per('p90Ms')),
                p99Ms: median(per('p99Ms')),
                perRoundP50Ms: per('p50Ms'),
                perRoundP99Ms: per('p99Ms'),
              },
            ];
          }),
        ) as Record<Pair, { p50Ms: number; p90Ms: number; p99Ms: number; perRoundP50Ms: number[]; perRoundP99Ms: number[] }>;
        const achieved = Object.fromEntries(variants.map((v) => [v.id, median(runs[rate]![v.id].map((x) => x.result.achievedRate))]));
        const cpu = Object.fromEntries(variants.map((v) => [v.id, medianRecord(runs[rate]![v.id].map((x) => x.cpu))]));
        const lag = median(runs[rate]!.direct.concat(runs[rate]!.envoy, runs[rate]!.gateway).map((x) => x.result.schedulerLagP99Ms));
        return [rate, { byVariant, overheads, achievedRate: achieved, cpuUsPerRequest: cpu, schedulerLagP99Ms: lag, ...stalls[rate], rounds: runs[rate] }];
      }),
    ) as Record<
      number,
      {
        byVariant: Record<Variant['id'], LatencySummary>;
        overheads: Record<Pair, { p50Ms: number; p90Ms: number; p99Ms: number }>;
        achievedRate: Record<string, number>;
        cpuUsPerRequest: Record<string, Record<string, number>>;
        schedulerLagP99Ms: number;
      }
    >;

    const maxRps = Object.fromEntries(variants.map((v) => [v.id, median(max[v.id].map((x) => x.result.requestsPerSecond))])) as Record<Variant['id'], number>;
    const ratioPerRound = max.gateway.map((x, i) => x.result.requestsPerSecond / max.envoy[i]!.result.requestsPerSecond);
    const ratio = median(ratioPerRound);
    const maxCpu = Object.fromEntries(variants.map((v) => [v.id, medianRecord(max[v.id].map((x) => x.cpu))]));

    const base = s.gatewayRates.includes(200) ? 200 : s.gatewayRates[0]!;
    const o = fixed[base]!.overheads['gateway-direct'];
    const stallNote =
      stalls[base]!.stalledRoundsKept > 0 ? `${stalls[base]!.stalledRoundsKept} of ${s.rounds} rounds kept although the machine stalled` : undefined;
    const targets = [
      checkTarget({
        id: 'gateway.p50-overhead',
        section: SECTION,
        description: `(c) full gateway - (a) direct, p50 at ${base} req/s`,
        value: o.p50Ms,
        limit: GATEWAY_P50_OVERHEAD_MS,
        kind: 'max',
        unit: ' ms',
        note: stallNote,
      }),
      checkTarget({
        id: 'gateway.p99-overhead',
        section: SECTION,
        description: `(c) full gateway - (a) direct, p99 at ${base} req/s`,
        value: o.p99Ms,
        limit: GATEWAY_P99_OVERHEAD_MS,
        kind: 'max',
        unit: ' ms',
        note: stallNote,
      }),
      checkTarget({
        id: 'gateway.throughput-ratio',
        section: SECTION,
        description: '(c) full gateway max throughput / (b) Envoy without authz',
        value: ratio * 100,
        limit: GATEWAY_THROUGHPUT_RATIO * 100,
        kind: 'min',
        unit: ' %',
        digits: 0,
      }),
    ];

    const ms = (n: number) => fmt(n, 3);
    const cpuCols = ['gateway Envoy', 'Envoy (no authz)', 'OPA', 'agentd', 'load generator'];
    const cpuRow = (label: string, c: Record<string, number> | undefined) => [
      label,
      ...cpuCols.map((k) => (c?.[k] === undefined || c[k]! < 0.5 ? '-' : fmt(c[k], 0))),
      fmt(
        Object.values(c ?? {}).reduce((a, b) => a + b, 0),
        0,
      ),
    ];
    const markdown = [
      `Request: GET ${STATUS_PATH} with the \`admin\` key (tier \`unlimited\`) on every variant. Fixed rates: open loop, ${s.rounds} rounds x ${s.durationMs / 1000} s (after ${s.warmupMs / 1000} s warm-up) per variant, variant order rotated per round; latency from dispatch to last byte, in ms; the table shows the median over rounds of each percentile. Envoy runs with --concurrency 1, as in the harness.`,
      '',
      table(
        ['Rate', 'Variant', 'p50', 'p90', 'p99', 'achieved req/s'],
        s.gatewayRates.flatMap((rate) =>
          variants.map((v) => {
            const l = fixed[rate]!.byVariant[v.id];
            return [`${rate}/s`, v.label, ms(l.p50Ms), ms(l.p90Ms), ms(l.p99Ms), fmt(fixed[rate]!.achievedRate[v.id], 0)];
          }),
        ),
      ),
      '',
      `Overhead: median over rounds of the per-round difference (ms). Rounds run again because the load generator stalled (scheduler lag p99 > 10 ms: the machine was busy elsewhere): ${s.gatewayRates.map((r) => `${r}/s: ${stalls[r]!.discardedRounds}`).join(', ')}.`,
      '',
      table(
        ['Rate', 'Difference', 'p50', 'p90', 'p99'],
        s.gatewayRates.flatMap((rate) =>
          PAIRS.map((p) => {
            const d = fixed[rate]!.overheads[p.id];
            return [`${rate}/s`, p.label, fmtDelta(d.p50Ms, 3), fmtDelta(d.p90Ms, 3), fmtDelta(d.p99Ms, 3)];
          }),
        ),
      ),
      '',
      `Maximum throughput: autocannon, ${s.maxConnections} connections, ${s.maxRounds} round(s) x ${s.maxDurationMs / 1000} s per variant (after ${s.maxWarmupMs / 1000} s warm-up); the load generator shares the 2 cores.`,
      '',
      table(
        ['Variant', 'req/s (median)', 'vs (b)', 'p50 / p99 (ms, 1 ms resolution)'],
        variants.map((v) => {
          const runsOf = max[v.id];
          return [
            v.label,
            fmt(maxRps[v.id], 0),
            `${fmt((maxRps[v.id] / maxRps.envoy) * 100, 0)} %`,
            `${fmt(median(runsOf.map((x) => x.result.latencyP50Ms)), 0)} / ${fmt(median(runsOf.map((x) => x.result.latencyP99Ms)), 0)}`,
          ];
        }),
      ),
      '',
      `(c)/(b) per round: ${ratioPerRound.map((x) => `${fmt(x * 100, 0)} %`).join(', ')}.`,
      '',
      'Where the CPU goes: CPU time per request (microseconds, user + system, from /proc/<pid>/stat), median over rounds.',
      '',
      table(
        ['Run', ...cpuCols, 'total'],
        [
          ...variants.map((v) => cpuRow(`${v.label}, ${Math.max(...s.gatewayRates)} req/s`, fixed[Math.max(...s.gatewayRates)]!.cpuUsPerRequest[v.id])),
          ...variants.map((v) => cpuRow(`${v.label}, max`, maxCpu[v.id])),
        ],
      ),
    ].join('\n');

    return {
      id: 'gateway',
      title: '1. Gateway overhead: GET /api/v1/status',
      data: {
        request: { method: 'GET', path: STATUS_PATH },
        fixedRate: fixed,
        maxThroughput: { requestsPerSecond: maxRps, ratioGatewayToEnvoy: ratio, ratioPerRound, cpuUsPerRequest: maxCpu, rounds: max },
      },
      targets,
      markdown,
    };
  } finally {
    ctx.sampler.setPhase(undefined);
    await plain.process.stop();
  }
}

/** Median per key over a list of records. */
export function medianRecord(list: readonly Record<string, number>[]): Record<string, number> {
  const keys = new Set(list.flatMap((r) => Object.keys(r)));
  return Object.fromEntries([...keys].map((k) => [k, median(list.map((r) => r[k] ?? NaN))]));
}
