// 5. Memory: VmRSS of the core processes of the harness stack (gateway Envoy, egress Envoy,
// OPA, the bundle server Envoy, agentd), idle right after start, the highest value sampled under load (every 200 ms
// while the gateway and egress runs are going), idle again after the load, and VmHWM (the
// kernel's peak for the process). agentd runs from its TypeScript source here (node
// agentd/src/main.ts), not from the bundle the image ships.
import { readRss, type Rss } from '../lib/memory.ts';
import { checkTarget, fmt, table, type SectionResult } from '../lib/report.ts';
import type { StackContext } from '../lib/context.ts';
import { sleep } from '../../scripts/local/processes.ts';

const SECTION = 'Memory';
const IDLE_STACK_TARGET_MIB = 400;
const CORE = ['gateway', 'egress', 'opa', 'bundles', 'agentd'] as const;
const LABEL: Record<(typeof CORE)[number], string> = {
  gateway: 'gateway Envoy',
  egress: 'egress Envoy',
  opa: 'OPA',
  bundles: 'bundle server Envoy',
  agentd: 'agentd',
};

export function corePids(ctx: Pick<StackContext, 'stack'>): Record<string, number | undefined> {
  return Object.fromEntries(CORE.map((k) => [LABEL[k], ctx.stack.processes[k].pid]));
}

/** The median of a few readings, `settleMs` after the last activity. */
export async function idleRss(ctx: Pick<StackContext, 'stack'>, settleMs: number): Promise<Record<string, Rss | undefined>> {
  await sleep(settleMs);
  const readings: Record<string, Rss[]> = {};
  for (let i = 0; i < 5; i++) {
    for (const [name, pid] of Object.entries(corePids(ctx))) {
      const r = pid ? readRss(pid) : undefined;
      if (r) (readings[name] ??= []).push(r);
    }
    await sleep(200);
  }
  return Object.fromEntries(
    Object.entries(readings).map(([name, list]) => {
      const sorted = [...list].sort((a, b) => a.rssMiB - b.rssMiB);
      return [name, sorted[Math.floor(sorted.length / 2)]];
    }),
  );
}

export async function memorySuite(ctx: StackContext, idleFresh: Record<string, Rss | undefined>): Promise<SectionResult> {
  ctx.log('memory: idle after load');
  const idleAfter = await idleRss(ctx, ctx.settings.idleSettleMs);
  const underLoad = ctx.sampler.maxUnderLoad();
  const names = CORE.map((k) => LABEL[k]);
  const sum = (f: (n: string) => number | undefined) => names.reduce((a, n) => a + (f(n) ?? NaN), 0);
  const totalFresh = sum((n) => idleFresh[n]?.rssMiB);
  const totalAfter = sum((n) => idleAfter[n]?.rssMiB);
  const totalLoad = sum((n) => underLoad[n]?.rssMiB);
  const totalPeak = sum((n) => idleAfter[n]?.peakMiB);
  const targets = [
    checkTarget({
      id: 'memory.idle-stack',
      section: SECTION,
      description: 'RSS of gateway Envoy + egress Envoy + OPA + bundle server Envoy + agentd, idle after start',
      value: totalFresh,
      limit: IDLE_STACK_TARGET_MIB,
      kind: 'max',
      unit: ' MiB',
      digits: 0,
    }),
  ];
  const mib = (n: number | undefined) => (n === undefined ? 'n/a' : fmt(n, 0));
  const markdown = [
    'VmRSS from /proc/<pid>/status of the harness processes, MiB. "Under load" is the highest value sampled every 200 ms during the gateway and egress runs (phase in brackets); "peak" is VmHWM at the end.',
    '',
    table(
      ['Process', 'Idle after start', 'Under load (max)', 'Idle after load', 'Peak (VmHWM)'],
      [
        ...names.map((n) => [
          n,
          mib(idleFresh[n]?.rssMiB),
          underLoad[n] ? `${mib(underLoad[n]!.rssMiB)} (${underLoad[n]!.phase})` : 'n/a',
          mib(idleAfter[n]?.rssMiB),
          mib(idleAfter[n]?.peakMiB),
        ]),
        ['**core stack**', `**${mib(totalFresh)}**`, `${mib(totalLoad)} (sum of maxima)`, mib(totalAfter), mib(totalPeak)],
      ],
    ),
  ].join('\n');
  return {
    id: 'memory',
    title: '5. Memory of the core processes',
    data: {
      idleAfterStartMiB: idleFresh,
      underLoadMaxMiB: underLoad,
      idleAfterLoadMiB: idleAfter,
      totals: { idleAfterStart: totalFresh, underLoadSumOfMaxima: totalLoad, idleAfterLoad: totalAfter, peak: totalPeak },
    },
    targets,
    markdown,
  };
}
