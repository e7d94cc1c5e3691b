// The shape of bench/results/latest.json, target checks, and the markdown rendering.
import type { MachineInfo, ToolVersions } from './machine.ts';

/** "pass", "fail", or why there is no number. */
export type TargetStatus = 'pass' | 'fail' | `not measured: ${string}`;

export interface TargetCheck {
  readonly id: string;
  readonly section: string;
  readonly description: string;
  /** The goal in words, e.g. "<= 1 ms". */
  readonly goal: string;
  /** The measured value in words, e.g. "0.82 ms". */
  readonly measured: string;
  readonly value: number | null;
  readonly status: TargetStatus;
  /** E.g. that the number came from rounds in which the machine stalled. */
  readonly note?: string;
}

export interface SectionResult {
  readonly id: string;
  readonly title: string;
  /** Everything measured, for latest.json. */
  readonly data: unknown;
  readonly targets: readonly TargetCheck[];
  /** The section's part of latest.md. */
  readonly markdown: string;
}

export interface BenchResults {
  readonly schema: 1;
  readonly mode: 'full' | 'quick';
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationSeconds: number;
  readonly machine: MachineInfo;
  readonly loadAverageAtEnd: readonly number[];
  readonly tools: ToolVersions;
  readonly settings: unknown;
  /** Time spent waiting for the neighbours to go quiet before rounds. */
  readonly waitedForQuietSeconds: number;
  readonly targets: readonly TargetCheck[];
  readonly sections: Readonly<Record<string, unknown>>;
  readonly errors: readonly { readonly section: string; readonly error: string }[];
}

/** A target with a numeric limit: pass when `value <= limit` (or >= for "min" goals). */
export function checkTarget(t: {
  id: string;
  section: string;
  description: string;
  value: number;
  limit: number;
  kind: 'max' | 'min';
  unit: string;
  digits?: number;
  note?: string;
}): TargetCheck {
  const d = t.digits ?? 2;
  const ok = Number.isFinite(t.value) && (t.kind === 'max' ? t.value <= t.limit : t.value >= t.limit);
  return {
    id: t.id,
    section: t.section,
    description: t.description,
    goal: `${t.kind === 'max' ? '<=' : '>='} ${fmt(t.limit, d)}${t.unit}`,
    measured: Number.isFinite(t.value) ? `${fmt(t.value, d)}${t.unit}` : 'n/a',
    value: Number.isFinite(t.value) ? t.value : null,
    status: ok ? 'pass' : 'fail',
    ...(t.note ? { note: t.note } : {}),
  };
}

export function fmt(n: number | null | undefined, digits = 2): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return 'n/a';
  return n.toFixed(digits);
}

/** A signed difference, e.g. "+0.41". */
export function fmtDelta(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return 'n/a';
  return `${n >= 0 ? '+' : ''}${n.toFixed(digits)}`;
}

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

const statusCell = (s: TargetStatus) => (s === 'pass' ? 'PASS' : s === 'fail' ? '**FAIL**' : s);

export function renderMarkdown(r: BenchResults, sections: readonly SectionResult[]): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# agentd platform benchmarks (${r.mode} run)`);
  out.push('');
  out.push(
    `Run ${r.startedAt} (${r.durationSeconds.toFixed(0)} s). Machine: ${m.cores} cores (${m.cpuModel}), ${(m.memoryMiB / 1024).toFixed(1)} GiB, ` +
      `kernel ${m.kernel}; load average at start ${m.loadAverageAtStart.join(' / ')}, at end ${r.loadAverageAtEnd.join(' / ')} (1/5/15 min).`,
  );
  out.push(`Tools: Envoy ${r.tools.envoy}; OPA ${r.tools.opa}; Node ${r.tools.node}; autocannon ${r.tools.autocannon}.`);
  out.push('');
  out.push(
    'Everything runs on 127.0.0.1 on this one machine: load generator, proxies, OPA and agentd share its cores. Variants are measured side by side in one run (interleaved rounds); tables show medians over rounds.' +
      (r.waitedForQuietSeconds >= 1
        ? ` The run waited ${r.waitedForQuietSeconds.toFixed(0)} s in total for other work on the machine to quiet down before rounds.`
        : ''),
  );
  out.push('');
  out.push('## Targets');
  out.push('');
  out.push(
    table(
      ['Section', 'Target', 'Goal', 'Measured', 'Result'],
      r.targets.map((t) => [t.section, t.description, t.goal, t.note ? `${t.measured} (${t.note})` : t.measured, statusCell(t.status)]),
    ),
  );
  if (r.errors.length > 0) {
    out.push('');
    out.push('## Errors');
    out.push('');
    for (const e of r.errors) out.push(`- **${e.section}**: ${e.error.split('\n')[0]}`);
  }
  for (const s of sections) {
    out.push('');
    out.push(`## ${s.title}`);
    out.push('');
    out.push(s.markdown.trim());
  }
  out.push('');
  return out.join('\n');
}
