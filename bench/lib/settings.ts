// Run sizes: the full run (about 5-7 minutes on 2 cores) and --quick (under 2 minutes).
// Every knob is here so that the report can record what a number was measured with.

export interface BenchSettings {
  readonly mode: 'full' | 'quick';
  /** Fixed-rate runs: rounds per variant, warm-up and measured window of each run. */
  readonly rounds: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Rounds run again (in total, per rate and level) when the load generator stalled. */
  readonly stallRetries: number;
  /** Gateway fixed rates, req/s. */
  readonly gatewayRates: readonly number[];
  /** Maximum-throughput runs (autocannon, closed loop). */
  readonly maxRounds: number;
  readonly maxWarmupMs: number;
  readonly maxDurationMs: number;
  readonly maxConnections: number;
  /** Egress: Envoy-level rate and agentd http_fetch rate, req/s. */
  readonly egressRate: number;
  readonly intentRate: number;
  /** OPA: API key counts, services, sequential Check calls per round, rounds. */
  readonly opaKeyCounts: readonly number[];
  readonly opaServices: number;
  readonly opaCallsPerRound: number;
  readonly opaRounds: number;
  readonly opaConcurrency: number;
  readonly opaThroughputMs: number;
  /** Deploy: keys in the rendered spec, fresh-process (cold) renders, in-process (warm) renders. */
  readonly renderKeys: number;
  readonly renderServices: number;
  readonly renderColdRuns: number;
  readonly renderWarmRuns: number;
  /** Deploy: cold `pulumi up` runs (destroy between), and runs of each no-op (preview, up). */
  readonly pulumiColdRuns: number;
  readonly pulumiNoopRuns: number;
  /** Total time the run may wait for the machine to go quiet before rounds. */
  readonly quietBudgetMs: number;
  /** Seconds the stack settles before the idle memory reading. */
  readonly idleSettleMs: number;
}

export const FULL: BenchSettings = {
  mode: 'full',
  rounds: 4,
  warmupMs: 1000,
  durationMs: 4000,
  stallRetries: 2,
  gatewayRates: [200, 1000],
  maxRounds: 3,
  maxWarmupMs: 1000,
  maxDurationMs: 4000,
  maxConnections: 32,
  egressRate: 200,
  intentRate: 100,
  opaKeyCounts: [10, 1000, 10_000],
  opaServices: 100,
  opaCallsPerRound: 1500,
  opaRounds: 4,
  opaConcurrency: 8,
  opaThroughputMs: 1500,
  renderKeys: 1000,
  renderServices: 100,
  renderColdRuns: 5,
  renderWarmRuns: 20,
  pulumiColdRuns: 2,
  pulumiNoopRuns: 3,
  idleSettleMs: 3000,
  quietBudgetMs: 60_000,
};

export const QUICK: BenchSettings = {
  ...FULL,
  mode: 'quick',
  rounds: 2,
  warmupMs: 500,
  durationMs: 1500,
  stallRetries: 1,
  maxRounds: 1,
  maxWarmupMs: 500,
  maxDurationMs: 2000,
  opaCallsPerRound: 500,
  opaRounds: 2,
  opaThroughputMs: 500,
  renderColdRuns: 2,
  pulumiColdRuns: 1,
  pulumiNoopRuns: 1,
  renderWarmRuns: 5,
  idleSettleMs: 1500,
  quietBudgetMs: 10_000,
};
