// How the npm scripts run the Pulumi CLI: the repo's local file backend and a local passphrase
// by default (said out loud), the stack's images built first when it asks for local images.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const DEFAULT_STACK = 'dev';
/** The passphrase of local development stacks when the user sets none. Not for anything real. */
export const LOCAL_PASSPHRASE = 'agentd-local-development';

const log = (msg: string) => process.stderr.write(`[agentd] ${msg}\n`);

export function pulumiEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (!env['PULUMI_BACKEND_URL']) mkdirSync(join(ROOT, '.pulumi-state'), { recursive: true });
  if (!env['PULUMI_CONFIG_PASSPHRASE'] && !env['PULUMI_CONFIG_PASSPHRASE_FILE']) {
    env['PULUMI_CONFIG_PASSPHRASE'] = LOCAL_PASSPHRASE;
    log(`PULUMI_CONFIG_PASSPHRASE is not set: using the local development passphrase "${LOCAL_PASSPHRASE}" (set your own for any shared or real stack)`);
  }
  env['PULUMI_SKIP_UPDATE_CHECK'] = 'true';
  return env;
}

export function pulumi(args: string[], opts: SpawnSyncOptions & { env?: NodeJS.ProcessEnv } = {}): { status: number; stdout: string } {
  const r = spawnSync('pulumi', args, { cwd: ROOT, encoding: 'utf8', stdio: ['inherit', 'inherit', 'inherit'], ...opts });
  if (r.error) throw new Error(`could not run pulumi: ${r.error.message} (run \`npm run setup\`)`);
  return { status: r.status ?? 1, stdout: typeof r.stdout === 'string' ? r.stdout : '' };
}

/** Parses `--stack NAME` (default dev) and returns the rest of the arguments. */
export function stackArg(argv: string[]): { stack: string; rest: string[] } {
  const i = argv.indexOf('--stack');
  if (i === -1) return { stack: DEFAULT_STACK, rest: argv };
  const stack = argv[i + 1];
  if (!stack) throw new Error('--stack needs a name, e.g. --stack dev');
  return { stack, rest: [...argv.slice(0, i), ...argv.slice(i + 2)] };
}

export function selectStack(stack: string, env: NodeJS.ProcessEnv): void {
  const r = pulumi(['stack', 'select', '--create', stack, '--non-interactive'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`could not select or create stack ${stack}`);
}

/** The stack's config file, read directly (to know before Pulumi runs whether it needs local images). */
export function stackFileConfig(stack: string): Record<string, unknown> {
  try {
    const doc = parse(readFileSync(join(ROOT, 'stacks', `Pulumi.${stack}.yaml`), 'utf8')) as { config?: Record<string, unknown> };
    return doc?.config ?? {};
  } catch {
    return {};
  }
}

export function needsLocalImages(stack: string): boolean {
  const images = stackFileConfig(stack)['agentd:images'] as { mode?: string } | undefined;
  return images?.mode === 'local';
}

export function ensureDockerEngine(): void {
  const r = spawnSync('bash', [join(ROOT, 'scripts/dockerd.sh'), 'start'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('no Docker engine: scripts/dockerd.sh start failed (see above)');
}

export async function buildImagesIfNeeded(stack: string): Promise<void> {
  if (!needsLocalImages(stack)) return;
  log(`stack ${stack} uses local images: building them (scripts/images.ts)`);
  const { buildLocalImages } = await import('./images.ts');
  buildLocalImages();
}
