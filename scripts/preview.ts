// npm run preview [-- --stack NAME]: what `pulumi up` would change. The local twin of the CI
// preview (.github/workflows/preview.yml); exits non-zero on invalid config or policy data.
import { buildImagesIfNeeded, ensureDockerEngine, passThroughArgs, pulumi, pulumiEnv, selectStack, stackArg } from './pulumi-env.ts';

const USAGE =
  'usage: npm run preview [-- --stack NAME [--create]] [-- PULUMI_PREVIEW_FLAGS...]\n  `pulumi preview --diff` of a stack (default dev); fails on invalid config or policy data; other flags (e.g. --expect-no-changes) go to `pulumi preview`.';
const { stack, rest: args } = stackArg(process.argv.slice(2), USAGE);
const rest = passThroughArgs(args, USAGE);
const env = pulumiEnv(stack);
ensureDockerEngine();
await buildImagesIfNeeded(stack);
selectStack(stack, env);
process.exit(pulumi(['preview', '--non-interactive', '--diff', '--stack', stack, ...rest], { env }).status);
