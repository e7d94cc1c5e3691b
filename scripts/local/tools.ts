// Finds the pinned tools the tests run. A test that needs a tool fails when the tool is missing,
// with the command that installs it: nothing here skips.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TOOLS, type ToolName } from '../toolchain.ts';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export function pinnedVersions(): Record<string, string> {
  const text = readFileSync(join(REPO_ROOT, 'scripts/versions.env'), 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]),
  );
}

/** The tool cache (scripts/lib.sh sets AGENTD_TOOLS to the same default). */
export const TOOLS_DIR = process.env['AGENTD_TOOLS'] ?? join(homedir(), '.cache/agentd/tools');

/** The tool (scripts/toolchain.ts) each binary the tests run belongs to: its cache directory and pin come from there. */
const TOOL_OF = {
  envoy: 'envoy',
  opa: 'opa',
  prometheus: 'prometheus',
  promtool: 'prometheus',
  pulumi: 'pulumi',
  node: 'node',
  ratelimit: 'ratelimit',
  ctr: 'containerd',
} as const satisfies Record<string, ToolName>;

/** Absolute path of a pinned tool's binary; throws (failing the test) when it is not installed. */
export function toolPath(name: keyof typeof TOOL_OF): string {
  const tool = TOOLS[TOOL_OF[name]];
  const version = pinnedVersions()[tool.versionKey!];
  const p = join(TOOLS_DIR, tool.cacheDir, version ?? '?', 'bin', name);
  if (!existsSync(p)) {
    throw new Error(`${name} ${version} is not installed at ${p}: run \`npm run setup -- ${tool.name}\``);
  }
  return p;
}

/** The machine's redis-server (Debian's package, which `npm run setup -- redis` installs); throws when there is none. */
export function redisServerPath(): string {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat('/usr/bin', '/usr/local/bin')) {
    const p = join(dir, 'redis-server');
    if (dir && existsSync(p)) return p;
  }
  throw new Error('redis-server is not installed: run `npm run setup -- redis`');
}

export function run(
  bin: string,
  args: string[],
  opts: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {},
): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(bin, args, {
      cwd: opts.cwd,
      input: opts.input,
      env: opts.env,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 << 20,
    });
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    return { code: err.status ?? 1, stdout: String(err.stdout ?? ''), stderr: String(err.stderr ?? '') };
  }
}
