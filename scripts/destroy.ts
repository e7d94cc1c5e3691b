// npm run destroy [-- --stack NAME]: removes every resource of the stack (containers, networks,
// volumes); the stack's config stays in stacks/.
import { ensureDockerEngine, pulumi, pulumiEnv, selectStack, stackArg } from './pulumi-env.ts';

const { stack, rest } = stackArg(process.argv.slice(2));
const env = pulumiEnv(stack);
ensureDockerEngine();
selectStack(stack, env);
process.exit(pulumi(['destroy', '--yes', '--non-interactive', '--skip-preview', '--stack', stack, ...rest], { env }).status);
