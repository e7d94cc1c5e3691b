// A copy of the Pulumi project in a temp dir, with its own state backend, so a test can change
// policy data and run `pulumi` without touching the repo. node_modules is linked, not copied.
// Every `up` and `preview` runs the policy pack, as `npm run up` and `npm run preview` do.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { policyPackArgs } from '../pulumi-env.ts';
import { steadyTraffic } from './clients.ts';
import { sleep } from './processes.ts';
import { REPO_ROOT } from './tools.ts';

export interface ProjectCopy {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** Runs `pulumi ARGS --stack STACK --non-interactive` in the copy; throws on failure when `check`. */
  pulumi(args: string[], opts?: { check?: boolean; input?: string }): { status: number; out: string; stdout: string };
  /** The same, without blocking the event loop (a test sends traffic while it runs); rejects on failure. */
  pulumiAsync(args: string[]): Promise<{ out: string }>;
  /** `pulumi config set --path KEY` with the value on stdin (a PEM value would read as a flag). */
  set(path: string, value: string, secret?: boolean): void;
}

export function copyProject(stack: string, extraEnv: NodeJS.ProcessEnv = {}): ProjectCopy {
  const dir = mkdtempSync(join(tmpdir(), `agentd-${stack}-`));
  for (const p of ['index.ts', 'Pulumi.yaml', 'package.json', 'components', 'policy', 'grafana', 'agentd', 'build/images.json', 'scripts']) {
    if (existsSync(join(REPO_ROOT, p))) cpSync(join(REPO_ROOT, p), join(dir, p), { recursive: true });
  }
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
  mkdirSync(join(dir, 'stacks'));
  mkdirSync(join(dir, 'state'));
  const env = {
    ...process.env,
    PULUMI_BACKEND_URL: `file://${join(dir, 'state')}`,
    PULUMI_CONFIG_PASSPHRASE: `${stack}-passphrase`,
    PULUMI_SKIP_UPDATE_CHECK: 'true',
    ...extraEnv,
  };
  /** The arguments as run: with the policy pack for an `up` or a `preview`. */
  const withPack = (args: string[]) => (args[0] === 'up' || args[0] === 'preview' ? [...args, ...policyPackArgs(stack, dir)] : args);
  const pulumi = (args: string[], opts: { check?: boolean; input?: string } = {}) => {
    const r = spawnSync('pulumi', [...withPack(args), '--stack', stack, '--non-interactive'], {
      cwd: dir,
      env,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      input: opts.input,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    if ((opts.check ?? true) && r.status !== 0) throw new Error(`pulumi ${args.join(' ')} failed (${r.status}):\n${out.slice(-4000)}`);
    return { status: r.status ?? 1, out, stdout: r.stdout };
  };
  const pulumiAsync = (args: string[]) =>
    new Promise<{ out: string }>((resolve, reject) => {
      const child = spawn('pulumi', [...withPack(args), '--stack', stack, '--non-interactive'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
      const chunks: Buffer[] = [];
      child.stdout.on('data', (c: Buffer) => chunks.push(c));
      child.stderr.on('data', (c: Buffer) => chunks.push(c));
      child.on('error', reject);
      child.on('close', (code) => {
        const out = Buffer.concat(chunks).toString('utf8');
        if (code === 0) resolve({ out });
        else reject(new Error(`pulumi ${args.join(' ')} failed (${code}):\n${out.slice(-4000)}`));
      });
    });
  return {
    dir,
    env,
    pulumi,
    pulumiAsync,
    set: (path, value, secret = false) => void pulumi(['config', 'set', '--path', ...(secret ? ['--secret'] : []), path], { input: value }),
  };
}

/**
 * The e2e suites' policy change under traffic: disables the `ci` client in the copy's
 * policy/data/clients.yaml and runs `pulumi up` while `request` (another client's call, true when
 * it succeeded) goes on about 50 times a second; then waits up to `waitMs` for `disabled` (the
 * change in force) and lets the traffic go on a second more.
 */
export async function disableClientUnderTraffic(
  project: ProjectCopy,
  opts: { request: () => Promise<boolean>; disabled: () => Promise<boolean>; waitMs: number },
): Promise<{ sent: number; failed: number; inForceMs: number }> {
  const traffic = steadyTraffic(opts.request, 20);
  const file = join(project.dir, 'policy/data/clients.yaml');
  const before = readFileSync(file, 'utf8');
  const after = before.replace(
    '    role: operator\n    rate_limit_tier: standard\n',
    '    role: operator\n    rate_limit_tier: standard\n    enabled: false\n',
  );
  if (after === before) throw new Error(`${file}: the ci client (role operator, tier standard) is not where the change expects it`);
  writeFileSync(file, after);
  let inForceMs = Number.NaN;
  let sent: { sent: number; failed: number };
  try {
    await project.pulumiAsync(['up', '--yes', '--skip-preview']);
    const upDone = Date.now();
    while (!(await opts.disabled()) && Date.now() - upDone < opts.waitMs) await sleep(100);
    inForceMs = Date.now() - upDone;
    await sleep(1000); // traffic goes on a moment after the change
  } finally {
    sent = await traffic.stop();
  }
  return { ...sent, inForceMs };
}
