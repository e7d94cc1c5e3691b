// npm run destroy [-- --stack NAME]: removes every resource of the stack (containers, networks,
// volumes); the stack's config stays in stacks/.
import { passThroughArgs, prepareStack, pulumi, pulumiEnv, selectStack, stackArg } from './pulumi-env.ts';

const USAGE = 'usage: npm run destroy [-- --stack NAME]\n  Removes every resource of a stack (default dev); its config stays in stacks/.';
const { stack, rest: args } = stackArg(process.argv.slice(2), USAGE);
const rest = passThroughArgs(args, USAGE);
const env = pulumiEnv(stack);
await prepareStack('destroy', stack);
selectStack(stack, env);
process.exit(pulumi(['destroy', '--yes', '--non-interactive', '--skip-preview', '--stack', stack, ...rest], { env }).status);
