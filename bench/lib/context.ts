// What the suites that need the running platform share: the harness stack, the settings, the
// RSS sampler, and a way to register extra processes so that they are stopped on every exit.
import type { ManagedProcess } from '../../scripts/local/processes.ts';
import type { Stack } from '../../scripts/local/stack.ts';
import type { PolicySpec } from '../../policy/spec.ts';
import { readFileSync } from 'node:fs';
import { cpuPerRequest, cpuSnapshot } from './cpu.ts';
import { sleep } from '../../scripts/local/processes.ts';
import type { RssSampler } from './memory.ts';
import type { BenchSettings } from './settings.ts';

export interface StackContext {
  readonly settings: BenchSettings;
  readonly stack: Stack;
  /** The spec the stack was started with. */
  readonly spec: PolicySpec;
  readonly workDir: string;
  readonly sampler: RssSampler;
  /** Waits (bounded) for the neighbours to go quiet before each round. */
  readonly quiet: QuietWindow;
  log(message: string): void;
  /** Registers a process the suite started (stopped at the end, killed if the bench dies). */
  track(p: ManagedProcess): void;
}

/** A load run with the CPU each process spent on it, per request, in microseconds. */
export async function withCpu<T extends { readonly generatorCpuMs: number }>(
  pids: Readonly<Record<string, number | undefined>>,
  requests: (r: T) => number,
  run: () => Promise<T>,
): Promise<{ result: T; cpuUsPerRequest: Record<string, number> }> {
  const before = cpuSnapshot(pids);
  const result = await run();
  const after = cpuSnapshot(pids);
  const n = requests(result);
  const cpu = cpuPerRequest(before, after, n);
  cpu['load generator'] = (result.generatorCpuMs * 1000) / n;
  return { result, cpuUsPerRequest: cpu };
}

/**
 * Scheduler lag p99 above this means the load generator itself could not run on time: the
 * machine stalled (a noisy neighbour took the cores) and the round is not comparable.
 */
const STALL_LAG_MS = 10;

/**
 * Interleaved rounds: every round runs each variant once, in an order rotated per round, so a
 * pair of variants is always measured back to back. A round in which the generator stalled is
 * run again (at most `maxRetries` times over all rounds); the discarded rounds are counted.
 */
/** Share of the machine's CPU time (all cores) that was busy over `ms` (steal counts as busy). */
async function machineBusy(ms: number): Promise<number> {
  const read = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { idle, total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
  };
  const a = read();
  await sleep(ms);
  const b = read();
  return b.total > a.total ? 1 - (b.idle - a.idle) / (b.total - a.total) : 0;
}

/**
 * Before a round: wait (bounded) until the machine is mostly idle, i.e. the neighbours are quiet
 * (between rounds the bench itself is idle). Shared budget for the whole run.
 */
export class QuietWindow {
  private budgetMs: number;
  waitedMs = 0;
  constructor(budgetMs: number) {
    this.budgetMs = budgetMs;
  }
  async wait(log: (m: string) => void, maxBusy = 0.35, perCallMs = 15_000): Promise<void> {
    if (this.budgetMs <= 0) return;
    const t0 = performance.now();
    let busy = await machineBusy(300);
    if (busy <= maxBusy) return;
    log(
      `  the machine is ${(busy * 100).toFixed(0)} % busy with other work: waiting for a quieter moment (up to ${(Math.min(perCallMs, this.budgetMs) / 1000).toFixed(0)} s)`,
    );
    while (busy > maxBusy && performance.now() - t0 < Math.min(perCallMs, this.budgetMs)) busy = await machineBusy(500);
    const waited = performance.now() - t0;
    this.budgetMs = Math.max(0, this.budgetMs - waited);
    this.waitedMs += waited;
    if (this.budgetMs <= 0) log('  the time budget for waiting is used up: the remaining rounds start whatever the machine is doing');
  }
}

export async function interleavedRounds<V extends { readonly id: string }, R extends { readonly schedulerLagP99Ms: number }>(opts: {
  rounds: number;
  variants: readonly V[];
  maxRetries: number;
  run: (v: V, round: number, attempt: number) => Promise<R>;
  log: (m: string) => void;
  quiet?: QuietWindow;
}): Promise<{ byVariant: Record<string, R[]>; discardedRounds: number; stalledRoundsKept: number }> {
  const byVariant: Record<string, R[]> = Object.fromEntries(opts.variants.map((v) => [v.id, []]));
  let retries = 0;
  let kept = 0;
  for (let r = 0; r < opts.rounds; r++) {
    for (let attempt = 0; ; attempt++) {
      const k = (r + attempt) % opts.variants.length;
      const order = [...opts.variants.slice(k), ...opts.variants.slice(0, k)];
      const got: Record<string, R> = {};
      await opts.quiet?.wait(opts.log);
      for (const v of order) got[v.id] = await opts.run(v, r, attempt);
      const stalled = Object.entries(got).filter(([, x]) => x.schedulerLagP99Ms > STALL_LAG_MS);
      if (stalled.length > 0 && retries < opts.maxRetries) {
        retries++;
        opts.log(
          `  round ${r + 1}: the load generator stalled (scheduler lag p99 ${stalled.map(([id, x]) => `${id} ${x.schedulerLagP99Ms.toFixed(0)} ms`).join(', ')}): running the round again`,
        );
        continue;
      }
      if (stalled.length > 0) kept++;
      for (const v of opts.variants) byVariant[v.id]!.push(got[v.id]!);
      break;
    }
  }
  return { byVariant, discardedRounds: retries, stalledRoundsKept: kept };
}
