// npm run preview [-- --stack NAME] [-- --without-images]: what `pulumi up` would change. The
// local twin of the CI preview (.github/workflows/preview.yml, which passes --without-images);
// exits non-zero on invalid config or policy data.
import { passThroughArgs, prepareStack, pulumi, pulumiEnv, selectStack, stackArg } from './pulumi-env.ts';

const USAGE =
  'usage: npm run preview [-- --stack NAME [--create]] [-- --without-images] [-- PULUMI_PREVIEW_FLAGS...]\n' +
  '  `pulumi preview --diff` of a stack (default dev); fails on invalid config or policy data; other flags (e.g. --expect-no-changes) go to `pulumi preview`.\n' +
  '  --without-images  builds no local image and needs no Docker engine (as in CI): the preview shows the images last built, or placeholders.';
const { stack, rest: args } = stackArg(process.argv.slice(2), USAGE);
const withoutImages = args.includes('--without-images');
const rest = passThroughArgs(
  args.filter((a) => a !== '--without-images'),
  USAGE,
);
const env = pulumiEnv(stack);
await prepareStack('preview', stack, { withoutImages });
selectStack(stack, env);
process.exit(pulumi(['preview', '--non-interactive', '--diff', '--stack', stack, ...rest], { env }).status);
