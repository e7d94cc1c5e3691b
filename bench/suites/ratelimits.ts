// Global rate limits: the latency the rate-limit service's check adds. One harness stack with
// global limits (Redis, the rate-limit service); its gateway, and beside it a replica of the
// same gateway rendered with local limits (token buckets in Envoy), both in front of the same
// agentd and OPA. The `ci` key (tier standard, made effectively unlimited here so that neither
// variant refuses) calls GET /api/v1/status at 200 req/s on both, in interleaved rounds; the
// overhead is the median over rounds of the per-round difference.
import { shippedSpecWith } from '../../scripts/local/fixtures.ts';
import { join } from 'node:path';
import { STATUS_PATH } from '../../agentd/src/contract.ts';
import { rawRequest } from '../../scripts/local/clients.ts';
import { startStack } from '../../scripts/local/stack.ts';
import { interleavedRounds, withCpu, type QuietWindow } from '../lib/context.ts';
import type { ManagedProcess } from '../../scripts/local/processes.ts';
import { rateLoad, type RateLoadResult } from '../lib/load.ts';
import { checkTarget, fmt, fmtDelta, table, type SectionResult } from '../lib/report.ts';
import type { BenchSettings } from '../lib/settings.ts';
import { median, medianSummary, type LatencySummary } from '../lib/stats.ts';

const SECTION = 'Global rate limits';
const RATE = 200;
/** What the global check may add to the gateway's median latency at 200 req/s. */
const GLOBAL_P50_OVERHEAD_MS = 1;

/** The shipped policy with the `standard` tier (the `ci` key's) raised out of reach: the check runs, nothing is refused. */
function benchSpec() {
  return shippedSpecWith({
    rateLimitTiers: [
      [/standard:\n\s+requests_per_minute: \d+\n\s+requests_per_hour: \d+/, 'standard:\n    requests_per_minute: 100000000\n    requests_per_hour: 100000000'],
    ],
  });
}

interface Variant {
  readonly id: 'local' | 'global';
  readonly label: string;
  readonly port: number;
}

export async function rateLimitsSuite(
  settings: BenchSettings,
  ctx: { workDir: string; log(m: string): void; quiet: QuietWindow; track(p: ManagedProcess): void },
): Promise<SectionResult> {
  const spec = benchSpec();
  const stack = await startStack({ spec, dir: join(ctx.workDir, 'ratelimits'), globalRateLimits: {} });
  try {
    const local = await stack.startReplica('gateway', (input) => ({ ...input, gateway: { ...input.gateway, rateLimitService: undefined } }));
    const key = stack.apiKeys['ci'];
    if (!key) throw new Error('the shipped policy has no `ci` client any more');
    const variants: readonly Variant[] = [
      { id: 'local', label: 'gateway, local limits', port: local.port },
      { id: 'global', label: 'gateway, global limits', port: stack.ports.gateway },
    ];
    // Each variant is what it claims: only the global one's limit has the service's name.
    for (const v of variants) {
      const r = await rawRequest(v.port, { path: STATUS_PATH, headers: { 'x-api-key': key } });
      const named = String(r.headers['x-ratelimit-limit'] ?? '').includes('name=');
      if (r.status !== 200 || named !== (v.id === 'global'))
        throw new Error(`${v.label}: answered ${r.status}, x-ratelimit-limit ${r.headers['x-ratelimit-limit']}`);
    }
    const pids = {
      'gateway (global)': stack.processes.gateway.pid,
      'gateway (local)': local.pid,
      'rate-limit service': stack.limiter?.ratelimit.pid,
      Redis: stack.limiter?.redis.pid,
      OPA: stack.processes.opa.pid,
      agentd: stack.processes.agentd.pid,
    };
    type Run = { latency: LatencySummary; result: RateLoadResult; cpu: Record<string, number>; schedulerLagP99Ms: number };
    const out = await interleavedRounds<Variant, Run>({
      rounds: settings.rounds,
      variants,
      maxRetries: settings.stallRetries,
      log: ctx.log,
      quiet: ctx.quiet,
      run: async (v, r) => {
        ctx.log(`ratelimits: ${RATE} req/s, round ${r + 1}/${settings.rounds}, ${v.label}`);
        const { result, cpuUsPerRequest } = await withCpu(
          pids,
          (x) => x.sent,
          () =>
            rateLoad(
              {
                target: { host: '127.0.0.1', port: v.port },
                requests: [{ method: 'GET', path: STATUS_PATH, headers: { 'x-api-key': key, accept: 'application/json' } }],
                rate: RATE,
                warmupMs: settings.warmupMs,
                durationMs: settings.durationMs,
                initialConnections: 4,
                maxConnections: 64,
                expectStatus: 200,
                expectBody: ['"version"'],
                timeoutMs: 10_000,
              },
              `ratelimits ${v.label}`,
            ),
        );
        return { latency: result.latency, result, cpu: cpuUsPerRequest, schedulerLagP99Ms: result.schedulerLagP99Ms };
      },
    });
    const runs = out.byVariant as Record<Variant['id'], Run[]>;
    const summary = Object.fromEntries(variants.map((v) => [v.id, medianSummary(runs[v.id].map((x) => x.latency))])) as Record<Variant['id'], LatencySummary>;
    const delta = (k: 'p50Ms' | 'p99Ms') => median(runs.global.map((x, i) => x.latency[k] - runs.local[i]!.latency[k]));
    const overhead = { p50Ms: delta('p50Ms'), p99Ms: delta('p99Ms') };
    const cpu = (id: Variant['id'], name: string) => median(runs[id].map((x) => x.cpu[name] ?? 0));
    const serviceCpu = cpu('global', 'rate-limit service') + cpu('global', 'Redis');
    const targets = [
      checkTarget({
        id: 'global-limit-p50',
        section: SECTION,
        description: `latency the global check adds at ${RATE} req/s (p50)`,
        value: overhead.p50Ms,
        limit: GLOBAL_P50_OVERHEAD_MS,
        kind: 'max',
        unit: 'ms',
      }),
    ];
    const markdown = [
      `GET ${STATUS_PATH} with a limited key at ${RATE} req/s, ${settings.rounds} interleaved rounds; the same agentd and OPA behind both.`,
      '',
      table(
        ['variant', 'p50 ms', 'p99 ms', 'gateway CPU µs/req'],
        variants.map((v) => [
          v.label,
          fmt(summary[v.id].p50Ms),
          fmt(summary[v.id].p99Ms),
          fmt(cpu(v.id, v.id === 'global' ? 'gateway (global)' : 'gateway (local)'), 0),
        ]),
      ),
      '',
      `Global minus local, median of per-round differences: p50 ${fmtDelta(overhead.p50Ms)} ms, p99 ${fmtDelta(overhead.p99Ms)} ms. ` +
        `The rate-limit service and Redis spent ${fmt(serviceCpu, 0)} µs of CPU per request.`,
    ].join('\n');
    return { id: 'ratelimits', title: SECTION, data: { rate: RATE, summary, overhead, serviceCpuUsPerRequest: serviceCpu, rounds: runs }, targets, markdown };
  } finally {
    await stack.stop();
  }
}
