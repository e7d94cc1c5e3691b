// npm run preview [-- --stack NAME] [-- --without-images] [-- --policy-base REF]: what
// `pulumi up` would change, and above it what the working tree's policy changes in access (the
// decision diff of `npm run policy -- diff`). The local twin of the CI preview
// (.github/workflows/preview.yml, which passes --without-images and compares with the pull
// request's base); exits non-zero on invalid config or policy data.
import { formatChanges } from '../policy/decision-diff.ts';
import { diffAgainstCommit, policyCommitOf } from './local/policy-diff.ts';
import { passThroughArgs, policyPackArgs, prepareStack, pulumi, pulumiEnv, ROOT, selectStack, stackArg } from './pulumi-env.ts';

const USAGE =
  'usage: npm run preview [-- --stack NAME [--create]] [-- --without-images] [-- --policy-base REF] [-- PULUMI_PREVIEW_FLAGS...]\n' +
  '  `pulumi preview --diff` of a stack (default dev); fails on invalid config or policy data; other flags (e.g. --expect-no-changes) go to `pulumi preview`.\n' +
  '  --without-images   builds no local image and needs no Docker engine (as in CI): the preview shows the images last built, or placeholders.\n' +
  "  --policy-base REF  the policy the decision diff above Pulumi's compares with (default: the pull request's base in GitHub Actions, else HEAD).";
const { stack, rest: args } = stackArg(process.argv.slice(2), USAGE);
const withoutImages = args.includes('--without-images');
const baseAt = args.indexOf('--policy-base');
const policyBase = baseAt === -1 ? (process.env['GITHUB_BASE_REF'] ? `origin/${process.env['GITHUB_BASE_REF']}` : 'HEAD') : args[baseAt + 1];
if (policyBase === undefined || policyBase.startsWith('-')) {
  process.stderr.write(`--policy-base needs a git ref, e.g. HEAD~1 or origin/main\n${USAGE}\n`);
  process.exit(2);
}
const rest = passThroughArgs(
  args.filter((a, i) => a !== '--without-images' && (baseAt === -1 || (i !== baseAt && i !== baseAt + 1))),
  USAGE,
);
const env = pulumiEnv(stack);
await prepareStack('preview', stack, { withoutImages });
await printDecisionDiff(policyBase);
selectStack(stack, env);
process.exit(pulumi(['preview', '--non-interactive', '--diff', '--stack', stack, ...policyPackArgs(stack), ...rest], { env }).status);

/** The decision diff against `ref`, or why there is none; never stops the preview (Pulumi reports invalid data itself). */
async function printDecisionDiff(ref: string): Promise<void> {
  const found = policyCommitOf(ROOT, ref);
  if ('problem' in found) {
    process.stdout.write(`Policy decisions: not compared (${found.problem}; a shallow clone needs the base's history)\n\n`);
    return;
  }
  try {
    const result = await diffAgainstCommit(ROOT, ref, found.commit);
    const lines = formatChanges(result.changes).split('\n');
    process.stdout.write(
      `Policy decisions against ${ref} (decided by OPA, ${result.probes} requests per side):\n${lines.map((l) => `    ${l}`).join('\n')}\n\n`,
    );
  } catch (e) {
    process.stdout.write(`Policy decisions: not compared (${(e as Error).message})\n\n`);
  }
}
