// Installs the tools a command needs into the tool cache ($AGENTD_TOOLS, default
// ~/.cache/agentd/tools), each from the first source that works:
//   1. the cache itself (a finished install, or a link to a copy found earlier, checked again);
//   2. a copy already on this machine at a version that will do: on PATH, or a provider in
//      Pulumi's plugin directory; it is linked into the cache, not copied;
//   3. the project's official release (SHA-256 checked), or `pulumi plugin install`;
//   4. a build from the registries this machine reaches (scripts/tools/<tool>.sh), the
//      independent ones side by side, with progress lines.
// `--explain` says, per tool, which source it is and why, and installs nothing.
// No npm package is needed: this runs before `npm ci` has.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pinnedVersions, REPO_ROOT, TOOLS_DIR } from './local/tools.ts';
import {
  buildOrder,
  buildSlots,
  COMMANDS,
  type Command,
  checksumFor,
  fallbackWords,
  formatDuration,
  mirrorVariable,
  OFFICIAL_BASE,
  type Platform,
  type StackNeeds,
  TOOL_NAMES,
  TOOLS,
  type ToolName,
  toolsFor,
  versionAccepted,
  whoNeeds,
} from './toolchain.ts';

const PLUGINS_DIR = join(process.env['PULUMI_HOME'] ?? join(homedir(), '.pulumi'), 'plugins');
const log = (msg: string) => process.stderr.write(`[setup] ${msg}\n`);
const versions = pinnedVersions();
const pinned = (tool: ToolName): string => {
  const key = TOOLS[tool].versionKey;
  return key ? (versions[key] ?? '?') : '';
};
const cacheEntry = (tool: ToolName) => join(TOOLS_DIR, TOOLS[tool].cacheDir, pinned(tool));

/** What a cache entry that is not a build records about where it came from (.source). */
interface SourceRecord {
  kind: 'machine' | 'official';
  version: string;
  /** Executable name -> the file it came from (a machine copy) or the URL (a release). */
  from: Record<string, string>;
}

// ---- 1. the cache --------------------------------------------------------------------------------

type CacheState = { complete: true; origin: string } | { complete: false; why?: string };

function readSource(dir: string): SourceRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, '.source'), 'utf8')) as SourceRecord;
  } catch {
    return undefined;
  }
}

/** Whether the cache holds `tool`; a link to a machine copy that moved or changed version is dropped (and found again). */
function cacheState(tool: ToolName): CacheState {
  const dir = cacheEntry(tool);
  if (!existsSync(join(dir, '.complete'))) return { complete: false };
  const source = readSource(dir);
  if (!source) return { complete: true, origin: 'built here' };
  // A link (to a machine copy, or to a plugin `pulumi plugin install` put in ~/.pulumi) may dangle.
  const gone = TOOLS[tool].binaries.find((b) => !existsSync(join(dir, 'bin', b)));
  if (!gone && source.kind === 'official') return { complete: true, origin: `official release (${Object.values(source.from)[0]})` };
  const changed = gone ? undefined : machineCopy(tool, { only: source.from });
  if (!gone && changed?.ok) return { complete: true, origin: `machine copy: ${Object.values(source.from)[0]} (${changed.version})` };
  const why = gone ? `${source.from[gone] ?? gone} is gone` : changed && !changed.ok ? changed.why : 'changed';
  rmSync(dir, { recursive: true, force: true });
  return { complete: false, why: `the copy linked earlier no longer does: ${why}` };
}

// ---- 2. a copy on the machine -------------------------------------------------------------------

type Found = { ok: true; version: string; paths: Record<string, string> } | { ok: false; why: string };

/** Every `name` on PATH, in order, outside the tool cache and node_modules (those are ours, not the machine's). */
function onPath(name: string): string[] {
  const dirs = (process.env['PATH'] ?? '').split(delimiter).filter((d) => d && !resolve(d).startsWith(resolve(TOOLS_DIR)) && !d.includes('node_modules'));
  return [...new Set(dirs.map((d) => join(d, name)).filter((p) => existsSync(p)))];
}

function probeOutput(path: string, args: readonly string[]): string {
  const r = spawnSync(path, args, { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`;
}

/** A copy of `tool` on the machine that will do, or why there is none. `only` checks just these files (a link made earlier). */
function machineCopy(tool: ToolName, opts: { only?: Record<string, string> } = {}): Found {
  const spec = TOOLS[tool];
  const want = pinned(tool);
  const m = spec.onMachine;
  if (!m) return { ok: false, why: 'not looked for on the machine' };
  if (m.where === 'plugins') {
    const dir = join(PLUGINS_DIR, `resource-${m.plugin}-v${want}`);
    const bin = join(dir, `pulumi-resource-${m.plugin}`);
    if (!existsSync(bin) || existsSync(`${dir}.partial`)) return { ok: false, why: `not in ${PLUGINS_DIR} at v${want}` };
    return { ok: true, version: want, paths: { [`pulumi-resource-${m.plugin}`]: bin } };
  }
  const paths: Record<string, string> = {};
  let version = '';
  for (const [bin, probe] of Object.entries(m.probes)) {
    const candidates = opts.only ? [opts.only[bin]!].filter(Boolean) : onPath(bin);
    if (candidates.length === 0) return { ok: false, why: `no ${bin} on PATH` };
    const refusals: string[] = [];
    for (const path of candidates) {
      const found = probe.parse(probeOutput(path, probe.args));
      const why = found === undefined ? `${path} did not report a version` : versionAccepted(tool, found, want);
      if (why === undefined) {
        paths[bin] = path;
        version ||= found!;
        break;
      }
      refusals.push(found === undefined ? why : `${path}: ${why}`);
    }
    if (!paths[bin]) return { ok: false, why: refusals.join('; ') };
  }
  if (tool === 'pulumi') {
    // The CLI runs the program through the Node.js language host that ships beside it.
    const dir = dirname(realpathSync(paths['pulumi']!));
    const host = join(dir, 'pulumi-language-nodejs');
    if (!existsSync(host)) return { ok: false, why: `${paths['pulumi']} (v${version}) has no pulumi-language-nodejs beside it in ${dir}` };
    paths['pulumi-language-nodejs'] = host;
    for (const extra of ['pulumi-resource-pulumi-nodejs', 'pulumi-analyzer-policy']) {
      if (existsSync(join(dir, extra))) paths[extra] = join(dir, extra);
    }
  }
  return { ok: true, version, paths };
}

/** Puts the cache entry in place from a staged directory (bin/ filled), with its .source and .complete. */
function commitEntry(tool: ToolName, stage: string, source: SourceRecord): void {
  writeFileSync(join(stage, '.source'), `${JSON.stringify(source, null, 2)}\n`);
  writeFileSync(join(stage, '.complete'), '');
  const dest = cacheEntry(tool);
  rmSync(dest, { recursive: true, force: true });
  renameSync(stage, dest);
}

function stageDir(tool: ToolName): string {
  const root = join(TOOLS_DIR, TOOLS[tool].cacheDir);
  mkdirSync(root, { recursive: true });
  const stage = mkdtempSync(join(root, `.stage-${pinned(tool)}-`));
  mkdirSync(join(stage, 'bin'));
  return stage;
}

/** Links a machine copy into the cache, so PATH, the tests and the image builds find it where they look. */
function linkMachineCopy(tool: ToolName, found: Extract<Found, { ok: true }>, kind: SourceRecord['kind']): void {
  const stage = stageDir(tool);
  for (const [bin, path] of Object.entries(found.paths)) symlinkSync(resolve(path), join(stage, 'bin', bin));
  commitEntry(tool, stage, { kind, version: found.version, from: found.paths });
}

// ---- 3. the official release --------------------------------------------------------------------

const platform = (): Platform | undefined => {
  const os = process.platform === 'linux' || process.platform === 'darwin' ? process.platform : undefined;
  const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : undefined;
  return os && arch ? { os, arch } : undefined;
};

const dnsAnswers = new Map<string, Promise<string | undefined>>();
/** Undefined when `host` resolves, else why not (memoised: one lookup per host and run). */
function unreachable(host: string): Promise<string | undefined> {
  if (!dnsAnswers.has(host)) {
    const timeout = new Promise<string>((r) => setTimeout(() => r(`${host} did not resolve within 5 s`), 5000).unref());
    dnsAnswers.set(
      host,
      Promise.race([
        lookup(host).then(
          () => undefined,
          (e: NodeJS.ErrnoException) => `${host} does not resolve here (${e.code ?? e.message})`,
        ),
        timeout,
      ]),
    );
  }
  return dnsAnswers.get(host)!;
}

function officialBase(tool: ToolName): string | undefined {
  return process.env[mirrorVariable(tool)] ?? OFFICIAL_BASE[tool];
}

/** Where the official release would come from, and undefined or why it cannot be tried here. */
async function officialSource(tool: ToolName): Promise<{ where: string; why?: string } | undefined> {
  const o = TOOLS[tool].official;
  if (!o) return undefined;
  if (o.kind === 'pulumi-plugin') {
    const where = `installer \`pulumi plugin install resource ${o.plugin} ${pinned(tool)}\``;
    return { where, why: await unreachable(o.host) };
  }
  const p = platform();
  if (!p) return { where: 'release', why: `no release for ${process.platform}/${process.arch}` };
  const base = officialBase(tool)!;
  const [first] = o.files(pinned(tool), p, base);
  return {
    where: `release ${first!.url} (SHA-256 checked)`,
    why: (await unreachable(new URL(base).hostname)) ?? (commandExists('curl') ? undefined : 'curl is not installed'),
  };
}

function commandExists(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

function curl(url: string, out: string): string | undefined {
  const r = spawnSync('curl', ['-fsSL', '--connect-timeout', '10', '--retry', '2', '-o', out, url], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  return r.status === 0 ? undefined : `${url}: ${(r.stderr || `curl exit ${r.status}`).trim()}`;
}

/** Installs the official release into the cache; undefined on success, else why not (nothing is left behind). */
async function installOfficial(tool: ToolName): Promise<string | undefined> {
  const o = TOOLS[tool].official!;
  if (o.kind === 'pulumi-plugin') {
    const cli = join(cacheEntry('pulumi'), 'bin', 'pulumi');
    if (!existsSync(cli)) return 'no Pulumi CLI yet to run `pulumi plugin install` with';
    const r = spawnSync(cli, ['plugin', 'install', 'resource', o.plugin, pinned(tool)], { stdio: ['ignore', 2, 2], timeout: 600_000 });
    if (r.status !== 0) return `pulumi plugin install resource ${o.plugin} ${pinned(tool)} failed (exit ${r.status})`;
    const found = machineCopy(tool);
    if (!found.ok) return found.why;
    linkMachineCopy(tool, found, 'official');
    return undefined;
  }
  const stage = stageDir(tool);
  const work = mkdtempSync(join(stage, '.download-'));
  try {
    const from: Record<string, string> = {};
    for (const file of o.files(pinned(tool), platform()!, officialBase(tool)!)) {
      const sums = join(work, 'sha256');
      const listFailed = curl(file.sha256Url, sums);
      if (listFailed) return `no published checksum: ${listFailed}`;
      const expected = checksumFor(readFileSync(sums, 'utf8'), file.checksumName);
      if (!expected) return `${file.sha256Url} lists no SHA-256 for ${file.checksumName}`;
      const download = join(work, file.checksumName);
      const failed = curl(file.url, download);
      if (failed) return failed;
      const got = createHash('sha256').update(readFileSync(download)).digest('hex');
      if (got !== expected) return `${file.url} has SHA-256 ${got}, but ${file.sha256Url} says ${expected}: refused`;
      let root = work;
      if (file.format === 'tar.gz') {
        root = mkdtempSync(join(work, 'x-'));
        const r = spawnSync('tar', ['-xzf', download, '-C', root], { encoding: 'utf8' });
        if (r.status !== 0) return `could not unpack ${file.url}: ${r.stderr.trim()}`;
      }
      for (const [bin, member] of Object.entries(file.members)) {
        const src = join(root, member);
        if (!existsSync(src)) return `${file.url} has no ${member}`;
        copyFileSync(src, join(stage, 'bin', bin));
        chmodSync(join(stage, 'bin', bin), 0o755);
        from[bin] = file.url;
      }
    }
    // The release must be what it says: the same version probe as a machine copy, exactly the pin.
    const m = TOOLS[tool].onMachine;
    if (m?.where === 'path') {
      for (const [bin, probe] of Object.entries(m.probes)) {
        const v = probe.parse(probeOutput(join(stage, 'bin', bin), probe.args));
        if (v !== pinned(tool)) return `the released ${bin} reports ${v ?? 'no version'}, not ${pinned(tool)}`;
      }
    }
    rmSync(work, { recursive: true, force: true });
    commitEntry(tool, stage, { kind: 'official', version: pinned(tool), from });
    return undefined;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

// ---- the machine's Debian packages: the Docker engine, Redis ------------------------------------

/** A running engine or an installed dockerd is used as it is; undefined when there is neither. */
function dockerEngine(): string | undefined {
  const info = spawnSync('docker', ['version', '--format', '{{.Server.Version}}'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
  if (info.status === 0 && info.stdout.trim()) return `the running engine (${info.stdout.trim()})`;
  const dockerd = onPath('dockerd')[0] ?? ['/usr/bin/dockerd', '/usr/sbin/dockerd'].find((p) => existsSync(p));
  return dockerd ? `${dockerd} (scripts/dockerd.sh starts it when a command needs it)` : undefined;
}

/** An installed redis-server is used as it is (whoever needs one starts its own on loopback); undefined when there is none. */
function redisServer(): string | undefined {
  const path = onPath('redis-server')[0] ?? ['/usr/bin/redis-server', '/usr/sbin/redis-server'].find((p) => existsSync(p));
  if (!path) return undefined;
  const version = /\bv=(\S+)/.exec(probeOutput(path, ['--version']))?.[1];
  return `${path} (${version ? `Redis ${version}` : 'no version reported'}; started by whoever needs one)`;
}

/** The tools that are the machine's own packages (no pin, no cache entry): where each is, or undefined when it is not installed. */
const MACHINE_PACKAGES: Partial<Record<ToolName, () => string | undefined>> = { 'docker-engine': dockerEngine, redis: redisServer };

// ---- 4. builds, side by side ---------------------------------------------------------------------

/** Runs scripts/tools/<script>.sh, its output prefixed with the tool's name; resolves to the exit code. */
function runScript(tool: ToolName, env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((done) => {
    const child = spawn('bash', [join(REPO_ROOT, 'scripts/tools', `${TOOLS[tool].fallback.script}.sh`)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const stream of [child.stdout, child.stderr]) {
      let rest = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop()!;
        for (const line of lines) process.stderr.write(line.startsWith('[setup:') ? `${line}\n` : `[setup:${tool}] ${line}\n`);
      });
      stream.on('end', () => rest && process.stderr.write(`[setup:${tool}] ${rest}\n`));
    }
    child.on('close', (code) => done(code ?? 1));
  });
}

/**
 * Expected wall time (minutes). The table's minutes are each build alone on 2 cores; side by side
 * the builds share the cores, so together they take about their sum less a tenth (measured: 18
 * min for 20 min of builds on 2 cores), scaled to the cores there are, never less than the
 * longest step. Downloads run alongside.
 */
function expectedMinutes(tools: readonly ToolName[], cores: number): number {
  const builds = tools.filter((t) => TOOLS[t].fallback.cpuBound).map((t) => TOOLS[t].fallback.minutes);
  const sum = builds.reduce((a, b) => a + b, 0);
  return Math.max(0.9 * sum * Math.min(1, 2 / cores), ...tools.map((t) => TOOLS[t].fallback.minutes));
}

async function buildAll(tools: readonly ToolName[], purpose: string): Promise<void> {
  const cores = availableParallelism();
  const requested = process.env['AGENTD_SETUP_JOBS'] ? Number(process.env['AGENTD_SETUP_JOBS']) : undefined;
  const { jobs, goParallel } = buildSlots(cores, requested);
  const env = { ...process.env, AGENTD_GO_BUILD_P: process.env['AGENTD_GO_BUILD_P'] ?? String(goParallel) };
  const order = buildOrder(tools);
  const total = order.length;
  const t0 = Date.now();
  const cpuJobs = order.filter((t) => TOOLS[t].fallback.cpuBound).length;
  log(
    `${purpose}: ${total} to install: ${order.map((t) => `${t} (${TOOLS[t].fallback.cpuBound ? 'build' : 'download'}, ≈${TOOLS[t].fallback.minutes} min)`).join(', ')}; ` +
      `${cpuJobs > 1 ? `${Math.min(jobs, cpuJobs)} builds side by side on ${cores} cores, ` : ''}expected ≈${Math.ceil(expectedMinutes(order, cores))} min`,
  );
  const running = new Map<ToolName, number>();
  const waiting = [...order];
  const failed: ToolName[] = [];
  let done = 0;
  let started = 0;
  const heartbeat = setInterval(
    () => {
      const now = Date.now();
      const list = [...running].map(([t, s]) => `${t} ${formatDuration(now - s)} of ≈${TOOLS[t].fallback.minutes} min`).join(', ');
      log(`${formatDuration(now - t0)} elapsed, ${done} of ${total} done: ${list}${waiting.length > 0 ? `; waiting: ${waiting.join(', ')}` : ''}`);
    },
    Number(process.env['AGENTD_SETUP_PROGRESS_SECONDS'] ?? 60) * 1000,
  );
  await new Promise<void>((allDone) => {
    // Starts every waiting step the cores allow: builds up to `jobs` at once, downloads any time.
    const launch = () => {
      for (const tool of [...waiting]) {
        const buildsRunning = [...running.keys()].filter((t) => TOOLS[t].fallback.cpuBound).length;
        if (TOOLS[tool].fallback.cpuBound && buildsRunning >= jobs) continue;
        waiting.splice(waiting.indexOf(tool), 1);
        const step = ++started;
        running.set(tool, Date.now());
        log(`step ${step}/${total}: ${tool}: ${fallbackWords(tool)} (expected ≈${TOOLS[tool].fallback.minutes} min)`);
        void runScript(tool, env).then((code) => {
          const took = formatDuration(Date.now() - running.get(tool)!);
          running.delete(tool);
          done++;
          if (code === 0) log(`step ${step}/${total}: ${tool} ready in ${took} (${done} of ${total} done, ${formatDuration(Date.now() - t0)} elapsed)`);
          else {
            failed.push(tool);
            log(`step ${step}/${total}: ${tool} FAILED after ${took} (exit ${code}); its output is above`);
          }
          // After a failure nothing new starts; the steps under way finish (their work is kept).
          if (failed.length === 0) launch();
          if (running.size === 0 && (waiting.length === 0 || failed.length > 0)) allDone();
        });
      }
    };
    launch();
  });
  clearInterval(heartbeat);
  if (failed.length > 0) {
    throw new SetupError(`installing ${failed.join(', ')} failed (output above). Fix the cause, then: npm run setup -- ${failed.join(' ')}`);
  }
  log(`${purpose}: ${total} installed in ${formatDuration(Date.now() - t0)}`);
}

export class SetupError extends Error {}

// ---- the whole -----------------------------------------------------------------------------------

export interface EnsureOptions {
  /** What the tools are for, for the progress lines (e.g. "npm run up (stack dev)"). */
  readonly purpose: string;
  /** Fail instead of building from source. */
  readonly noBuild?: boolean;
}

/**
 * Makes every tool of `tools` ready: cached, linked from the machine, downloaded, or built.
 * Quiet when everything is cached. Throws SetupError naming what failed and the command to retry.
 */
export async function ensureTools(tools: readonly ToolName[], options: EnsureOptions): Promise<void> {
  const toBuild: ToolName[] = [];
  for (const tool of tools) {
    if (tool === 'node') continue; // scripts/setup installs the pinned Node before this runs on it
    const machinePackage = MACHINE_PACKAGES[tool];
    if (machinePackage) {
      if (!machinePackage()) toBuild.push(tool);
      continue;
    }
    const cached = cacheState(tool);
    if (cached.complete) {
      // opa.sh rebuilds when the plugin's source changed since the build (fast when it has not).
      if (tool === 'opa' && cached.origin === 'built here') toBuild.push(tool);
      continue;
    }
    if (cached.why) log(`${tool}: ${cached.why}`);
    const found = machineCopy(tool);
    if (found.ok) {
      linkMachineCopy(tool, found, 'machine');
      log(`${tool}: using ${Object.values(found.paths)[0]} (${found.version}), found on this machine`);
      continue;
    }
    const official = await officialSource(tool);
    if (official?.why) log(`${tool}: the official ${official.where} is out of reach (${official.why}); building it`);
    if (official && !official.why) {
      log(`${tool}: trying the official ${official.where}`);
      const why = await installOfficial(tool);
      if (!why) {
        log(`${tool}: official release installed`);
        continue;
      }
      log(`${tool}: the official release did not install: ${why}; building it instead`);
    }
    toBuild.push(tool);
  }
  if (toBuild.length === 0) return;
  const quick = toBuild.filter((t) => t === 'opa' && cacheState(t).complete);
  for (const t of quick) {
    if ((await runScript(t, process.env)) !== 0) throw new SetupError(`checking ${t} failed (output above): npm run setup -- ${t}`);
  }
  const rest = toBuild.filter((t) => !quick.includes(t));
  if (rest.length === 0) return;
  if (options.noBuild) {
    throw new SetupError(
      `${rest.join(', ')} would have to be built from source, and --no-build was given. \`npm run setup -- --explain\` says why each is not found.`,
    );
  }
  await buildAll(rest, options.purpose);
}

/** Per tool: where it comes from now, or the sources that would be tried, and why. Installs nothing. */
export async function explain(tools: readonly ToolName[], purpose: string, forCommand: boolean): Promise<string> {
  const lines = [`Tools for ${purpose}, each from the first source that works (cache: ${TOOLS_DIR}):`];
  const pad = (s: string) => `${s} `.padEnd(28); // at least one space: a pseudo-version (ratelimit) is longer than the column
  for (const tool of tools) {
    const spec = TOOLS[tool];
    const head = pad(`  ${tool} ${pinned(tool)}`.trimEnd());
    if (tool === 'node') {
      lines.push(`${head}${existsSync(join(cacheEntry(tool), '.complete')) ? 'cache' : 'to install'}: ${fallbackWords(tool)}`);
      continue;
    }
    const machinePackage = MACHINE_PACKAGES[tool];
    if (machinePackage) {
      const where = machinePackage();
      lines.push(`${head}${where ? `machine: ${where}` : `to install: ${spec.fallback.from}`}`);
      continue;
    }
    const dir = cacheEntry(tool);
    if (existsSync(join(dir, '.complete'))) {
      const source = readSource(dir);
      const origin = !source
        ? fallbackWords(tool)
        : source.kind === 'machine'
          ? `linked to the machine's ${Object.values(source.from)[0]} (${source.version}), checked on every run`
          : `official release ${Object.values(source.from)[0]}`;
      lines.push(`${head}cache: ${origin}`);
      continue;
    }
    const found = machineCopy(tool);
    if (found.ok) {
      lines.push(`${head}machine: ${Object.values(found.paths)[0]} (${found.version}), will be linked into the cache`);
      continue;
    }
    const steps = [`not on this machine: ${found.why}`];
    const official = await officialSource(tool);
    if (official) steps.push(`official ${official.where}${official.why ? `: not reachable: ${official.why}` : ''}`);
    steps.push(`${fallbackWords(tool)}, ≈${spec.fallback.minutes} min on 2 cores`);
    lines.push(`${head}to install, from the first of:`, ...steps.map((s, i) => `${pad('')}  ${i + 1}. ${s}`));
  }
  const unneeded = forCommand ? TOOL_NAMES.filter((t) => !tools.includes(t)) : [];
  if (unneeded.length > 0) {
    lines.push('Not needed for this, so not installed:');
    for (const t of unneeded) lines.push(`${pad(`  ${t}`)}only for ${whoNeeds(t)}`);
  }
  return `${lines.join('\n')}\n`;
}

const USAGE = `usage: npm run setup [-- [--explain] [--for COMMAND [--stack NAME]] [--no-build] [TOOL...]]
  Installs the tools a command needs (default: all of them, as npm test needs) into the tool cache
  ($AGENTD_TOOLS, default ~/.cache/agentd/tools), each from the first source that works: the cache;
  a copy on this machine that will do (PATH, ~/.pulumi/plugins), linked; the official release
  (SHA-256 checked; AGENTD_RELEASES_<TOOL> names a mirror); a build from the registries.
  --explain      per tool: where it comes from and why; installs nothing
  --for COMMAND  only what \`npm run COMMAND\` needs: ${COMMANDS.join(', ')}
  --stack NAME   with --for up/preview/destroy/key: the stack whose target decides (default dev)
  --no-build     fail instead of building anything from source
  TOOL           ${TOOL_NAMES.join(', ')}
  Builds run side by side (AGENTD_SETUP_JOBS, default from the cores), with progress lines.`;

async function main(argv: string[]): Promise<number> {
  const usageError = (msg: string) => {
    process.stderr.write(`${msg}\n${USAGE}\n`);
    return 2;
  };
  let parsed: ReturnType<
    typeof parseArgs<{
      options: {
        explain: { type: 'boolean' };
        for: { type: 'string' };
        stack: { type: 'string' };
        'no-build': { type: 'boolean' };
        help: { type: 'boolean'; short: 'h' };
      };
      allowPositionals: true;
    }>
  >;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        explain: { type: 'boolean' },
        for: { type: 'string' },
        stack: { type: 'string' },
        'no-build': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
    });
  } catch (e) {
    return usageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const unknown = positionals.find((p) => !(TOOL_NAMES as readonly string[]).includes(p));
  if (unknown) return usageError(`unknown tool ${unknown}`);
  const command = values.for as Command | undefined;
  if (command !== undefined && !(COMMANDS as readonly string[]).includes(command)) return usageError(`unknown command ${command} for --for`);
  if (values.stack !== undefined && !['up', 'preview', 'destroy', 'key'].includes(command ?? ''))
    return usageError('--stack goes with --for up, preview, destroy or key');
  if (command && positionals.length > 0) return usageError('give tools or --for, not both');
  let tools: ToolName[] = positionals.length > 0 ? (positionals as ToolName[]) : toolsFor(command ?? 'setup');
  let purpose = command ? `npm run ${command}` : positionals.length > 0 ? positionals.join(', ') : 'every command (npm test)';
  if (command && ['up', 'preview', 'destroy', 'key'].includes(command)) {
    // Only here: the stack file is YAML, read with the npm package (installed by now).
    const { stackArg, stackNeeds } = await import('./pulumi-env.ts');
    const { stack } = stackArg(values.stack ? ['--stack', values.stack] : [], USAGE);
    const needs: StackNeeds = stackNeeds(stack);
    tools = toolsFor(command, needs);
    purpose = `npm run ${command} (stack ${stack}: ${needs.target}${needs.localImages ? ', local images' : ''})`;
  }
  if (values.explain) {
    process.stdout.write(await explain(tools, purpose, command !== undefined));
    return 0;
  }
  try {
    await ensureTools(tools, { purpose, noBuild: values['no-build'] });
    return 0;
  } catch (e) {
    if (!(e instanceof SetupError)) throw e;
    log(`error: ${e.message}`);
    return 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
