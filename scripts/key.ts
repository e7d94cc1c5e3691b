// npm run -s key [-- --stack NAME] -- CLIENT: prints one API key of a stack (for curl).
// npm run key [-- --stack NAME] -- rotate CLIENT [--grace DURATION]: a new key for CLIENT, the
//   old one still accepted (as the same client) for the grace period (default 24h), deployed.
// npm run key [-- --stack NAME] -- retire CLIENT: ends the grace period now (the old key stops
//   working), deployed. Without it the old key stops working at the end of the grace period anyway.
import { join } from 'node:path';
import { isRfc3339 } from '../components/config.ts';
import { loadPolicySpec } from '../policy/spec.ts';
import { ensureToolsOrExit, policyPackArgs, prepareStack, ROOT, pulumi, pulumiEnv, stackArg, stackFileConfig } from './pulumi-env.ts';

const USAGE = `usage: npm run -s key [-- --stack NAME] -- CLIENT
       npm run key [-- --stack NAME] -- rotate CLIENT [--grace DURATION]
       npm run key [-- --stack NAME] -- retire CLIENT
  CLIENT            prints the API key of CLIENT (default admin) of a deployed stack (default dev)
  rotate CLIENT     gives CLIENT a new key and deploys it; the old key keeps working, as the same
                    client, for DURATION (default 24h; e.g. 30m, 12h, 7d), then stops by itself
  retire CLIENT     ends the grace period of CLIENT's old key now, and deploys`;

const { stack, rest } = stackArg(process.argv.slice(2), USAGE);
const fail = (message: string, code = 1): never => {
  process.stderr.write(`${message}\n`);
  process.exit(code);
};

/** A duration such as 30m, 12h or 7d, in milliseconds, or undefined. */
function parseDuration(s: string): number | undefined {
  const m = /^(\d+)(m|h|d)$/.exec(s);
  if (!m) return undefined;
  const n = Number(m[1]);
  return n > 0 ? n * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'] : undefined;
}

function deployedKeys(): Record<string, string> {
  const r = pulumi(['stack', 'output', 'apiKeys', '--show-secrets', '--json', '--stack', stack], { env: pulumiEnv(stack), stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) {
    fail(`stack ${stack} is not deployed (it has no API keys yet): deploy it with \`npm run up${stack === 'dev' ? '' : ` -- --stack ${stack}`}\``);
  }
  return JSON.parse(r.stdout) as Record<string, string>;
}

function knownClient(client: string | undefined): string {
  if (!client || client.startsWith('-')) return fail(`which client?\n${USAGE}`, 2);
  const clients = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data').clients.map((c) => c.id);
  if (!clients.includes(client)) fail(`no client "${client}" in policy/data/clients.yaml; clients: ${clients.join(', ')}`, 2);
  return client;
}

/** The client's rotation as the stack file holds it. */
function rotationOf(client: string): { generation: number; previousValidUntil?: string } {
  const keys = (stackFileConfig(stack)['agentd:keys'] ?? {}) as Record<string, { generation?: number | string; previousValidUntil?: string }>;
  const r = keys[client] ?? {};
  return { generation: Number(r.generation ?? 1), ...(r.previousValidUntil ? { previousValidUntil: r.previousValidUntil } : {}) };
}

function configure(args: string[]): void {
  const r = pulumi(['config', ...args, '--stack', stack], { env: pulumiEnv(stack), stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) fail(`pulumi config ${args.join(' ')} failed`);
}

function deploy(what: string): void {
  process.stderr.write(`[agentd] ${what}: deploying stack ${stack} (pulumi up)\n`);
  // Pulumi's progress goes to stderr: stdout carries only the new key (for `$(npm run -s key -- rotate ...)`).
  // With its preview, so the policy pack's stack-wide rules can stop it before anything changes (scripts/up.ts).
  const up = pulumi(['up', '--yes', '--non-interactive', '--stack', stack, ...policyPackArgs(stack)], {
    env: pulumiEnv(stack),
    stdio: ['ignore', 2, 2],
  });
  if (up.status !== 0)
    fail(`pulumi up failed; the stack config says what was asked (agentd:keys), run \`npm run up${stack === 'dev' ? '' : ` -- --stack ${stack}`}\` to retry`);
}

const [command, ...args] = rest;
// Printing a key needs only the CLI; a rotation deploys, so it needs what `npm run up` needs.
if (command === 'rotate' || command === 'retire') await prepareStack('key', stack, { withoutImages: true });
else await ensureToolsOrExit(['pulumi'], 'npm run key');
if (command === 'rotate') {
  const client = knownClient(args[0]);
  const graceIdx = args.indexOf('--grace');
  const extra = args.slice(1).filter((_, i) => i + 1 !== graceIdx && i + 1 !== graceIdx + 1);
  if (extra.length > 0) fail(`unknown argument ${extra[0]}\n${USAGE}`, 2);
  const grace = graceIdx === -1 ? 86_400_000 : parseDuration(args[graceIdx + 1] ?? '');
  if (grace === undefined) fail(`--grace needs a duration such as 30m, 12h or 7d\n${USAGE}`, 2);
  deployedKeys(); // refuses a stack that is not deployed
  const current = rotationOf(client);
  if (current.previousValidUntil && Date.parse(current.previousValidUntil) > Date.now()) {
    fail(
      `${client}'s previous key is still in its grace period (until ${current.previousValidUntil}); retire it first: npm run key --${stack === 'dev' ? '' : ` --stack ${stack}`} retire ${client}`,
    );
  }
  const until = new Date(Date.now() + grace!).toISOString().replace(/\.\d{3}Z$/, 'Z');
  if (!isRfc3339(until)) fail(`internal: ${until} is not RFC 3339`);
  configure(['set', '--path', `agentd:keys.${client}.generation`, String(current.generation + 1)]);
  configure(['set', '--path', `agentd:keys.${client}.previousValidUntil`, until]);
  deploy(`new key for ${client}`);
  process.stdout.write(`${deployedKeys()[client]}\n`);
  process.stderr.write(
    `[agentd] ${client} has a new key (above); its previous key works until ${until}, then stops. Retire it sooner with: npm run key --${stack === 'dev' ? '' : ` --stack ${stack}`} retire ${client}\n`,
  );
} else if (command === 'retire') {
  const client = knownClient(args[0]);
  if (args.length > 1) fail(`unknown argument ${args[1]}\n${USAGE}`, 2);
  if (!rotationOf(client).previousValidUntil) fail(`${client} has no previous key to retire`);
  configure(['rm', '--path', `agentd:keys.${client}.previousValidUntil`]);
  deploy(`retiring ${client}'s previous key`);
  process.stderr.write(`[agentd] ${client}'s previous key no longer works\n`);
} else {
  if (rest.length > 1 || command?.startsWith('-')) fail(`unknown argument ${command?.startsWith('-') ? command : rest[1]}\n${USAGE}`, 2);
  const client = command ?? 'admin';
  const keys = deployedKeys();
  if (!keys[client]) fail(`no API key for client "${client}"; clients: ${Object.keys(keys).join(', ')}`);
  process.stdout.write(`${keys[client]}\n`);
}
