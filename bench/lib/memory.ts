// Resident memory of processes, from /proc/<pid>/status (VmRSS now, VmHWM the peak so far).
import { readFileSync } from 'node:fs';

export interface Rss {
  readonly rssMiB: number;
  readonly peakMiB: number;
}

export function readRss(pid: number): Rss | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, peakMiB: kb('VmHWM') / 1024 };
}

/**
 * Samples the RSS of named processes every `intervalMs` while a phase is marked as load, and
 * keeps the highest value seen per process and phase.
 */
export class RssSampler {
  private readonly pids: () => Readonly<Record<string, number | undefined>>;
  private timer: NodeJS.Timeout | undefined;
  private phase: string | undefined;
  /** Highest RSS (MiB) per process, per phase. */
  readonly maxByPhase: Record<string, Record<string, number>> = {};

  constructor(pids: () => Readonly<Record<string, number | undefined>>, intervalMs = 200) {
    this.pids = pids;
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  /** Marks the start of a load phase (undefined: not under load). */
  setPhase(phase: string | undefined): void {
    this.phase = phase;
    if (phase) this.sample();
  }

  sample(): void {
    if (!this.phase) return;
    const into = (this.maxByPhase[this.phase] ??= {});
    for (const [name, pid] of Object.entries(this.pids())) {
      const r = pid ? readRss(pid) : undefined;
      if (r && Number.isFinite(r.rssMiB)) into[name] = Math.max(into[name] ?? 0, r.rssMiB);
    }
  }

  /** Highest RSS per process over every load phase. */
  maxUnderLoad(): Record<string, { rssMiB: number; phase: string }> {
    const out: Record<string, { rssMiB: number; phase: string }> = {};
    for (const [phase, byName] of Object.entries(this.maxByPhase)) {
      for (const [name, v] of Object.entries(byName)) {
        if (!out[name] || v > out[name].rssMiB) out[name] = { rssMiB: v, phase };
      }
    }
    return out;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
