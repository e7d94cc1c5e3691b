// Small statistics helpers. Latencies are kept whole (a Float64Array per run, a few thousand
// values), so percentiles are exact (nearest rank), not histogram buckets.

export interface LatencySummary {
  readonly count: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
}

/** Nearest-rank percentile of an ascending array. */
function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function summarize(values: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    meanMs: sorted.length ? sum / sorted.length : Number.NaN,
    p50Ms: percentileSorted(sorted, 50),
    p90Ms: percentileSorted(sorted, 90),
    p99Ms: percentileSorted(sorted, 99),
    p999Ms: percentileSorted(sorted, 99.9),
    maxMs: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
  };
}

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** The order of the variants in round `r`: rotated so no variant always runs first. */
export function rotate<T>(items: readonly T[], r: number): T[] {
  const k = r % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** Median over rounds of each percentile (the table's numbers). */
export function medianSummary(runs: readonly LatencySummary[]): LatencySummary {
  const m = (k: keyof LatencySummary) => median(runs.map((r) => r[k]));
  return {
    count: runs.reduce((a, r) => a + r.count, 0),
    meanMs: m('meanMs'),
    p50Ms: m('p50Ms'),
    p90Ms: m('p90Ms'),
    p99Ms: m('p99Ms'),
    p999Ms: m('p999Ms'),
    maxMs: Math.max(...runs.map((r) => r.maxMs)),
  };
}
