// What the numbers were measured on: the machine, its load when the run began, tool versions.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, toolPath } from '../../scripts/local/tools.ts';

export interface MachineInfo {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryMiB: number;
  readonly loadAverageAtStart: readonly [number, number, number];
  readonly kernel: string;
}

export interface ToolVersions {
  readonly envoy: string;
  readonly opa: string;
  readonly node: string;
  readonly autocannon: string;
}

export function machineInfo(): MachineInfo {
  const l = loadavg();
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryMiB: Math.round(totalmem() / 2 ** 20),
    loadAverageAtStart: [round2(l[0]!), round2(l[1]!), round2(l[2]!)],
    kernel: release(),
  };
}

const round2 = (n: number) => Math.round(n * 100) / 100;

const firstLine = (bin: string, args: string[], match?: RegExp): string => {
  const out = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = out
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return (match ? lines.find((l) => match.test(l)) : lines[0]) ?? out.trim();
};

/** Versions as the tools report them (`envoy --version`, `opa version`, `node --version`). */
export function toolVersions(): ToolVersions {
  const envoyLine = firstLine(toolPath('envoy'), ['--version'], /version/i);
  const opaLines = execFileSync(toolPath('opa'), ['version'], { encoding: 'utf8' }).split('\n');
  const opaVersion =
    opaLines
      .find((l) => l.startsWith('Version:'))
      ?.slice(8)
      .trim() ?? '?';
  const opaCommit = opaLines
    .find((l) => l.startsWith('Build Commit:'))
    ?.slice(13)
    .trim();
  const autocannon = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules/autocannon/package.json'), 'utf8')) as { version: string };
  return {
    envoy: envoyLine.replace(/^.*version:\s*/i, ''),
    opa: opaCommit ? `${opaVersion} (${opaCommit})` : opaVersion,
    node: process.version,
    autocannon: autocannon.version,
  };
}
