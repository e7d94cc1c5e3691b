// `npm run bench [-- --quick] [-- --only=gateway,egress,opa,ratelimits,deploy,memory,changes] [-- --keep] [-- --strict]`
//
// Runs the suites side by side on this machine (everything on 127.0.0.1), writes
// bench/results/latest.json and latest.md (quick runs: quick.*, partial runs: partial.*),
// refreshes the table in docs/benchmarks.md after a full run, and prints the markdown.
// Exit code: 1 if a suite could not measure; with --strict also if a target failed.
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStack, type Stack } from '../scripts/local/stack.ts';
import type { ManagedProcess } from '../scripts/local/processes.ts';
import { shippedSpec } from '../scripts/local/fixtures.ts';
import { toolPath } from '../scripts/local/tools.ts';
import { QuietWindow, type StackContext } from './lib/context.ts';
import { machineInfo, toolVersions } from './lib/machine.ts';
import { RssSampler } from './lib/memory.ts';
import { renderMarkdown, type BenchResults, type SectionResult } from './lib/report.ts';
import { FULL, QUICK, type BenchSettings } from './lib/settings.ts';
import { changesSuite } from './suites/changes.ts';
import { deploySuite } from './suites/deploy.ts';
import { egressSuite } from './suites/egress.ts';
import { gatewaySuite } from './suites/gateway.ts';
import { corePids, idleRss, memorySuite } from './suites/memory.ts';
import { opaSuite } from './suites/opa.ts';
import { rateLimitsSuite } from './suites/ratelimits.ts';

const SUITES = ['gateway', 'egress', 'opa', 'ratelimits', 'deploy', 'memory', 'changes'] as const;
type SuiteId = (typeof SUITES)[number];
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const DOC = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));
const DOC_START = '<!-- bench:latest:start -->';
const DOC_END = '<!-- bench:latest:end -->';

const USAGE = `usage: npm run bench [-- --quick] [-- --only=${SUITES.join(',')}] [-- --keep] [-- --strict]
  --quick    short rounds (under 2 minutes); results in bench/results/quick.{json,md}
  --only     run some suites; results in bench/results/partial.{json,md}
  --keep     keep the work directory (configs, logs) instead of deleting it
  --strict   exit 1 when a target is missed (default: only when a suite fails to measure)`;

interface Args {
  readonly quick: boolean;
  readonly only: readonly SuiteId[] | undefined;
  readonly keep: boolean;
  readonly strict: boolean;
}

/** A mistyped command line: the usage and exit 2, no stack trace. */
class UsageError extends Error {}

function parseArgs(argv: readonly string[]): Args | 'help' {
  let quick = false,
    keep = false,
    strict = false;
  let only: SuiteId[] | undefined;
  for (const a of argv) {
    if (a === '--quick') quick = true;
    else if (a === '--keep') keep = true;
    else if (a === '--strict') strict = true;
    else if (a === '-h' || a === '--help') return 'help';
    else if (a.startsWith('--only=')) {
      only = a.slice(7).split(',').filter(Boolean) as SuiteId[];
      const bad = only.filter((s) => !SUITES.includes(s));
      if (bad.length) throw new UsageError(`unknown suite(s) ${bad.join(', ')}; known: ${SUITES.join(', ')}`);
    } else throw new UsageError(`unknown argument ${a}`);
  }
  return { quick, only, keep, strict };
}

const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);

/** Processes the bench started: stopped at the end, killed if the bench itself dies. */
class Children {
  private readonly list: ManagedProcess[] = [];
  add(p: ManagedProcess): void {
    this.list.push(p);
  }
  async stopAll(): Promise<void> {
    await Promise.all(this.list.map((p) => p.stop().catch(() => undefined)));
  }
  killAllSync(): void {
    for (const p of this.list) {
      if (p.running && p.pid) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  }
}

export async function main(argv: readonly string[]): Promise<number> {
  let args: Args | 'help';
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message}\n${USAGE}\n`);
    return 2;
  }
  if (args === 'help') {
    console.log(USAGE);
    return 0;
  }
  const settings: BenchSettings = args.quick ? QUICK : FULL;
  const selected = new Set<SuiteId>(args.only ?? SUITES);
  // The tools, or a clear error saying how to get them.
  toolPath('envoy');
  toolPath('opa');

  const startedAt = new Date();
  const t0 = performance.now();
  const machine = machineInfo();
  const tools = toolVersions();
  log(
    `${args.quick ? 'quick' : 'full'} run on ${machine.cores} cores, load average ${machine.loadAverageAtStart.join(' / ')}; Envoy ${tools.envoy}, OPA ${tools.opa}, Node ${tools.node}`,
  );
  const workDir = mkdtempSync(join(tmpdir(), 'agentd-bench-'));
  const children = new Children();
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping the processes the bench started`);
    void children.stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', () => children.killAllSync());

  const quiet = new QuietWindow(settings.quietBudgetMs);
  const sections: SectionResult[] = [];
  const errors: { section: string; error: string }[] = [];
  const run = async (id: SuiteId, fn: () => Promise<SectionResult>) => {
    if (!selected.has(id)) return;
    const t = performance.now();
    try {
      sections.push(await fn());
      log(`${id}: done in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    } catch (e) {
      const err = e as Error;
      log(`${id}: FAILED: ${err.stack ?? err.message}`);
      errors.push({ section: id, error: err.message });
    }
  };

  // Suites without the stack first, on a quieter machine.
  await run('deploy', () => deploySuite(settings, log));
  await run('changes', () => changesSuite(log));
  await run('opa', () => opaSuite(settings, { workDir, log, quiet, track: (p) => children.add(p) }));
  await run('ratelimits', () => rateLimitsSuite(settings, { workDir, log, quiet, track: (p) => children.add(p) }));

  if (selected.has('gateway') || selected.has('egress') || selected.has('memory')) {
    let stack: Stack | undefined;
    try {
      log('starting the harness stack (gateway Envoy, egress Envoy, OPA, agentd, stand-in upstream)');
      const spec = shippedSpec();
      stack = await startStack({ spec, dir: join(workDir, 'stack') });
      for (const p of Object.values(stack.processes)) children.add(p);
      const s = stack;
      const sampler = new RssSampler(() => corePids({ stack: s }));
      const ctx: StackContext = { settings, stack, spec, workDir, sampler, quiet, log, track: (p) => children.add(p) };
      log('memory: idle after start');
      const idleFresh = await idleRss(ctx, settings.idleSettleMs);
      await run('gateway', () => gatewaySuite(ctx));
      await run('egress', () => egressSuite(ctx));
      await run('memory', () => memorySuite(ctx, idleFresh));
      sampler.stop();
    } catch (e) {
      const err = e as Error;
      log(`stack: FAILED: ${err.stack ?? err.message}`);
      errors.push({ section: 'stack', error: err.message });
    } finally {
      await stack?.stop();
    }
  }
  await children.stopAll();

  const order = (id: string) => SUITES.indexOf(id as SuiteId);
  sections.sort((a, b) => order(a.id) - order(b.id));
  const finishedAt = new Date();
  const results: BenchResults = {
    schema: 1,
    mode: args.quick ? 'quick' : 'full',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSeconds: (performance.now() - t0) / 1000,
    machine,
    loadAverageAtEnd: loadavg().map((x) => Math.round(x * 100) / 100),
    tools,
    settings,
    waitedForQuietSeconds: quiet.waitedMs / 1000,
    targets: sections.flatMap((s) => s.targets),
    sections: Object.fromEntries(sections.map((s) => [s.id, s.data])),
    errors,
  };
  const markdown = renderMarkdown(results, sections);
  const name = args.only ? 'partial' : args.quick ? 'quick' : 'latest';
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeAtomic(join(RESULTS_DIR, `${name}.json`), JSON.stringify(results, null, 2) + '\n');
  writeAtomic(join(RESULTS_DIR, `${name}.md`), markdown);
  if (name === 'latest') updateDoc(markdown);

  console.log(markdown);
  log(`results: bench/results/${name}.json and ${name}.md (${results.durationSeconds.toFixed(0)} s)`);
  if (args.keep || errors.length > 0) log(`work directory (configs, logs) kept: ${workDir}`);
  else rmSync(workDir, { recursive: true, force: true });
  const missed = results.targets.filter((t) => t.status === 'fail');
  if (missed.length > 0) log(`targets missed: ${missed.map((t) => t.id).join(', ')}`);
  return errors.length > 0 || (args.strict && missed.length > 0) ? 1 : 0;
}

function writeAtomic(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** Replaces the generated part of docs/benchmarks.md (between the markers) with the latest table. */
function updateDoc(markdown: string): void {
  let doc: string;
  try {
    doc = readFileSync(DOC, 'utf8');
  } catch {
    return;
  }
  const a = doc.indexOf(DOC_START);
  const b = doc.indexOf(DOC_END);
  if (a < 0 || b < a) return;
  // Two heading levels down, so the run's headings nest under the document's "Latest results".
  const body = markdown.replace(/^(#{1,4}) /gm, '##$1 ');
  writeAtomic(DOC, `${doc.slice(0, a + DOC_START.length)}\n${body.trim()}\n${doc.slice(b)}`);
  log('docs/benchmarks.md: latest results updated');
}
