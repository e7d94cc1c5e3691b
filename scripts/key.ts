// npm run -s key [-- --stack NAME] -- CLIENT: prints one API key of a stack (for curl).
import { pulumi, pulumiEnv, stackArg } from './pulumi-env.ts';

const { stack, rest } = stackArg(process.argv.slice(2));
const client = rest[0] ?? 'admin';
const r = pulumi(['stack', 'output', 'apiKeys', '--show-secrets', '--json', '--stack', stack], { env: pulumiEnv(stack), stdio: ['ignore', 'pipe', 'inherit'] });
if (r.status !== 0) process.exit(r.status);
const keys = JSON.parse(r.stdout) as Record<string, string>;
if (!keys[client]) {
  process.stderr.write(`no API key for client "${client}"; clients: ${Object.keys(keys).join(', ')}\n`);
  process.exit(1);
}
process.stdout.write(keys[client] + '\n');
