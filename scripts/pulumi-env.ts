// How the npm scripts run the Pulumi CLI: the repo's local file backend and a local passphrase
// by default (said out loud), the stack's images built first when it asks for local images.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

import { DEV_STACK as DEFAULT_STACK, LOCAL_PASSPHRASE, parseStackConfig, publicPassphraseProblem } from '../components/config.ts';
import { POLICY_PACK, policyPackConfig } from '../components/policy-pack.ts';
import { type StackNeeds, type ToolName, toolsFor } from './toolchain.ts';

export { DEFAULT_STACK, LOCAL_PASSPHRASE };
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

const log = (msg: string) => process.stderr.write(`[agentd] ${msg}\n`);

/**
 * Why a stack's secrets would not be protected, or undefined. The public development passphrase
 * is for the `dev` stack only; any other stack needs a passphrase of its own
 * (PULUMI_CONFIG_PASSPHRASE or _FILE), a secrets provider in its stack file, or a backend that
 * manages secrets (a PULUMI_BACKEND_URL that is not a local file backend). Pure.
 */
export function passphraseProblem(stack: string, env: NodeJS.ProcessEnv, stackFile: Record<string, unknown>): string | undefined {
  const passphrase = env['PULUMI_CONFIG_PASSPHRASE'];
  const ownPassphrase = (passphrase !== undefined && passphrase !== '') || Boolean(env['PULUMI_CONFIG_PASSPHRASE_FILE']);
  if (stack === DEFAULT_STACK) return undefined;
  const publicOne = publicPassphraseProblem(stack, passphrase);
  if (publicOne) return publicOne;
  if (ownPassphrase) return undefined;
  if (typeof stackFile['secretsprovider'] === 'string' && stackFile['secretsprovider'] !== 'passphrase') return undefined;
  const backend = env['PULUMI_BACKEND_URL'];
  if (backend && !backend.startsWith('file://')) return undefined;
  return (
    `stack ${stack} has no passphrase: nothing was encrypted or changed. The local development passphrase is for the ${DEFAULT_STACK} stack only. ` +
    `Set one for ${stack}, e.g.\n  umask 077; openssl rand -base64 32 > ~/.config/agentd/${stack}.passphrase\n  export PULUMI_CONFIG_PASSPHRASE_FILE=~/.config/agentd/${stack}.passphrase\n` +
    `or use a secrets provider (pulumi stack change-secrets-provider awskms://... --stack ${stack}) or a backend that manages secrets (PULUMI_BACKEND_URL).`
  );
}

/** The environment the Pulumi CLI runs with for `stack`; exits 2 if its secrets would be unprotected. */
export function pulumiEnv(stack: string = DEFAULT_STACK): NodeJS.ProcessEnv {
  const env = { ...process.env };
  const problem = passphraseProblem(stack, env, stackFileDocument(stack));
  if (problem) {
    log(problem);
    process.exit(2);
  }
  if (!env['PULUMI_BACKEND_URL']) mkdirSync(join(ROOT, '.pulumi-state'), { recursive: true });
  if (!env['PULUMI_CONFIG_PASSPHRASE'] && !env['PULUMI_CONFIG_PASSPHRASE_FILE']) {
    env['PULUMI_CONFIG_PASSPHRASE'] = LOCAL_PASSPHRASE;
    log(`PULUMI_CONFIG_PASSPHRASE is not set: using the local development passphrase "${LOCAL_PASSPHRASE}" (dev stack only)`);
  }
  env['PULUMI_SKIP_UPDATE_CHECK'] = 'true';
  return env;
}

export function pulumi(args: string[], opts: SpawnSyncOptions & { env?: NodeJS.ProcessEnv } = {}): { status: number; stdout: string } {
  const r = spawnSync('pulumi', args, { cwd: ROOT, encoding: 'utf8', stdio: ['inherit', 'inherit', 'inherit'], ...opts });
  if (r.error) throw new Error(`could not run pulumi: ${r.error.message} (run \`npm run setup\`)`);
  return { status: r.status ?? 1, stdout: typeof r.stdout === 'string' ? r.stdout : '' };
}

/**
 * Parses `--stack NAME` (default dev) and returns the rest of the arguments. With `usage`, a
 * script answers `--help`/`-h` with it (exit 0), and a `--stack` without a name prints it and
 * exits 2: never a stack trace for a mistyped command line.
 */
export function stackArg(argv: string[], usage?: string): { stack: string; rest: string[] } {
  if (usage !== undefined && (argv.includes('--help') || argv.includes('-h'))) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  // --create: a stack without a file in stacks/ on purpose (it starts from the defaults).
  const create = argv.includes('--create');
  const args = argv.filter((a) => a !== '--create');
  const i = args.indexOf('--stack');
  let stack = DEFAULT_STACK;
  let rest = args;
  if (i !== -1) {
    const named = args[i + 1];
    if (!named || named.startsWith('-')) {
      process.stderr.write(`--stack needs a name, e.g. --stack dev\n${usage ?? ''}\n`);
      process.exit(2);
    }
    stack = named;
    rest = [...args.slice(0, i), ...args.slice(i + 2)];
  }
  const known = knownStacks();
  if (!create && !known.includes(stack)) {
    process.stderr.write(
      `no stack "${stack}": stacks/Pulumi.${stack}.yaml does not exist; known stacks: ${known.join(', ') || 'none'}. ` +
        `A typo? To create it on purpose (from the defaults), add --create.\n`,
    );
    process.exit(2);
  }
  return { stack, rest };
}

/** For a command that takes no argument: `--help` prints the usage (exit 0), anything else prints it and exits 2. */
export function noArguments(argv: readonly string[], usage: string): void {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  if (argv.length > 0) {
    process.stderr.write(`unknown argument ${argv[0]}\n${usage}\n`);
    process.exit(2);
  }
}

/** Stacks with a file in stacks/ (their config lives there). */
export function knownStacks(): string[] {
  try {
    return readdirSync(join(ROOT, 'stacks'))
      .map((f) => /^Pulumi\.(.+)\.yaml$/.exec(f)?.[1])
      .filter((s): s is string => s !== undefined)
      .sort();
  } catch {
    return [];
  }
}

/**
 * The `pulumi` flags up, preview and destroy pass through (with whether each takes a value);
 * anything else is a mistyped command line: the usage and exit 2, before any tool runs.
 */
const PASS_THROUGH: Readonly<Record<string, boolean>> = {
  '--expect-no-changes': false,
  '--refresh': false,
  '--diff': false,
  '--json': false,
  '--suppress-outputs': false,
  '--target-dependents': false,
  '--target': true,
  '--replace': true,
  '--parallel': true,
};

/** Checks `rest` holds only pass-through pulumi flags; exits 2 with the usage otherwise. */
export function passThroughArgs(rest: readonly string[], usage: string): string[] {
  for (let i = 0; i < rest.length; i++) {
    const [flag] = rest[i]!.split('=');
    const takesValue = PASS_THROUGH[flag!];
    if (takesValue === undefined) {
      process.stderr.write(`unknown argument ${rest[i]}\n${usage}\n  pulumi flags passed through: ${Object.keys(PASS_THROUGH).join(', ')}\n`);
      process.exit(2);
    }
    if (takesValue && !rest[i]!.includes('=')) i++;
  }
  return [...rest];
}

export function selectStack(stack: string, env: NodeJS.ProcessEnv): void {
  const r = pulumi(['stack', 'select', '--create', stack, '--non-interactive'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`could not select or create stack ${stack}`);
}

/** The stack's file (stacks/Pulumi.<stack>.yaml of the project at `root`), read directly; {} when there is none. */
export function stackFileDocument(stack: string, root: string = ROOT): Record<string, unknown> {
  try {
    return (parse(readFileSync(join(root, 'stacks', `Pulumi.${stack}.yaml`), 'utf8')) as Record<string, unknown> | null) ?? {};
  } catch {
    return {};
  }
}

/** The stack's config, read directly (to know before Pulumi runs whether it needs local images). */
export function stackFileConfig(stack: string, root: string = ROOT): Record<string, unknown> {
  return (stackFileDocument(stack, root)['config'] as Record<string, unknown> | undefined) ?? {};
}

/** The stack file's config as the Pulumi program sees it (pulumi.runtime.allConfig: objects as JSON text), for parseStackConfig. */
export function stackFileRawConfig(stack: string, root: string = ROOT): Record<string, string> {
  return Object.fromEntries(Object.entries(stackFileConfig(stack, root)).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

/**
 * The flags that make a `pulumi preview` or `pulumi up` run the policy pack (policy/pack), with
 * its config for the stack written to build/policy-pack/<stack>.json, in the project at `root`.
 * A stack file the program will refuse gets the strict config: the program's own error is the
 * one to read.
 */
export function policyPackArgs(stack: string, root: string = ROOT): string[] {
  let allowPlaintext = false;
  try {
    allowPlaintext = parseStackConfig(stackFileRawConfig(stack, root), stack).gateway.allowPlaintext;
  } catch {
    // Left to the Pulumi program, which names the bad setting.
  }
  const file = join(root, 'build', 'policy-pack', `${stack}.json`);
  mkdirSync(join(root, 'build', 'policy-pack'), { recursive: true });
  writeFileSync(file, `${JSON.stringify(policyPackConfig({ allowPlaintext }), null, 2)}\n`);
  return ['--policy-pack', join(root, POLICY_PACK), '--policy-pack-config', file];
}

/** What the stack asks of this machine (its target, and whether its images are built here), from its stack file. */
export function stackNeeds(stack: string): StackNeeds {
  const config = stackFileConfig(stack);
  const images = config['agentd:images'] as { mode?: string } | undefined;
  return { target: config['agentd:target'] === 'kubernetes' ? 'kubernetes' : 'docker', localImages: images?.mode === 'local' };
}

/** Installs what is missing of `tools` (scripts/setup.ts); a failure ends the command with its message. */
export async function ensureToolsOrExit(tools: readonly ToolName[], purpose: string): Promise<void> {
  // Imported here, not at the top: `npm run setup -- --for up` imports this file from setup.ts.
  const { ensureTools, SetupError } = await import('./setup.ts');
  try {
    await ensureTools(tools, { purpose });
  } catch (e) {
    if (!(e instanceof SetupError)) throw e;
    log(`error: ${e.message}`);
    process.exit(1);
  }
}

/**
 * Before a Pulumi command on `stack`: only the tools it needs (the providers of its target; Envoy
 * and OPA only to build local images), the Docker engine when it needs one, and the stack's local
 * images unless `withoutImages` (a preview then shows the images last built, or placeholders).
 */
export async function prepareStack(command: 'up' | 'preview' | 'destroy' | 'key', stack: string, options: { withoutImages?: boolean } = {}): Promise<void> {
  const needs = stackNeeds(stack);
  const tools = toolsFor(command, needs, options);
  await ensureToolsOrExit(tools, `npm run ${command} (stack ${stack})`);
  if (tools.includes('docker-engine')) {
    // Its messages go to stderr: stdout carries only what a command prints for a pipe (a key).
    const r = spawnSync('bash', [join(ROOT, 'scripts/dockerd.sh'), 'start'], { stdio: ['ignore', 2, 2] });
    if (r.status !== 0) throw new Error('no Docker engine: scripts/dockerd.sh start failed (see above)');
  }
  if (needs.localImages && tools.includes('envoy')) {
    log(`stack ${stack} uses local images: building them (scripts/images.ts)`);
    const { buildLocalImages } = await import('./images.ts');
    buildLocalImages();
  }
}
