// CPU time of processes from /proc/<pid>/stat (utime + stime), to say where the CPU of a run
// went: CPU per request is far less sensitive to a noisy neighbour than latency is.
import { readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // Linux USER_HZ (`getconf CLK_TCK`)

/** CPU milliseconds (user + system) a process has used so far. */
export function cpuMs(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

export type CpuSnapshot = Readonly<Record<string, number | undefined>>;

export function cpuSnapshot(pids: Readonly<Record<string, number | undefined>>): CpuSnapshot {
  return Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuMs(pid)]));
}

/** CPU microseconds per request, by process, between two snapshots. */
export function cpuPerRequest(before: CpuSnapshot, after: CpuSnapshot, requests: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, b] of Object.entries(before)) {
    const a = after[name];
    if (a !== undefined && b !== undefined && requests > 0) out[name] = ((a - b) * 1000) / requests;
  }
  return out;
}
