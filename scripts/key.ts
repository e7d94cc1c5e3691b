// npm run -s key [-- --stack NAME] -- CLIENT: prints one API key of a stack (for curl).
import { pulumi, pulumiEnv, stackArg } from './pulumi-env.ts';

const USAGE = 'usage: npm run -s key [-- --stack NAME] -- CLIENT\n  Prints the API key of CLIENT (default admin) of a deployed stack (default dev).';
const { stack, rest } = stackArg(process.argv.slice(2), USAGE);
const client = rest[0] ?? 'admin';
const r = pulumi(['stack', 'output', 'apiKeys', '--show-secrets', '--json', '--stack', stack], { env: pulumiEnv(stack), stdio: ['ignore', 'pipe', 'pipe'] });
if (r.status !== 0) {
  process.stderr.write(
    `stack ${stack} is not deployed (it has no API keys yet): deploy it with \`npm run up${stack === 'dev' ? '' : ` -- --stack ${stack}`}\`\n`,
  );
  process.exit(1);
}
const keys = JSON.parse(r.stdout) as Record<string, string>;
if (!keys[client]) {
  process.stderr.write(`no API key for client "${client}"; clients: ${Object.keys(keys).join(', ')}\n`);
  process.exit(1);
}
process.stdout.write(keys[client] + '\n');
