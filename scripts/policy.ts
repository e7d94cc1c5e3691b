// npm run policy -- explain ...: asks the real OPA (with its Envoy plugin, serving a bundle
// built from policy/data) about a hypothetical request, exactly as Envoy would, and prints the
// decision and its reason.
// npm run policy -- diff [--base GIT_REF] [--json|--markdown]: what the working tree's policy/ changes
// against policy/ at GIT_REF (default HEAD), every decision asked of two real OPAs (one per side)
// and compared (policy/decision-diff.ts, scripts/local/policy-diff.ts).
//
//   npm run policy -- explain --client ci --method POST --path /api/v1/sandboxes
//   npm run policy -- explain --tier standard --service openai --method POST --path /v1/chat/completions
//   npm run policy -- diff --base origin/main
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildBundle, sha256Hex } from '../policy/bundle.ts';
import { formatChanges } from '../policy/decision-diff.ts';
import { loadPolicySpec, PolicyError, type PolicySpec } from '../policy/spec.ts';
import { ExtAuthzClient, RegistryServer, startOpa } from './local/opa.ts';
import { diffAgainstCommit, policyCommitOf } from './local/policy-diff.ts';
import { ensureToolsOrExit, ROOT } from './pulumi-env.ts';
import { toolsFor } from './toolchain.ts';

const USAGE = `usage:
  npm run policy -- explain --client ID [--method GET] --path /api/v1/...          (gateway)
  npm run policy -- explain --tier TIER --service ID [--method GET] --path /...    (egress)
  npm run policy -- diff [--base GIT_REF] [--json|--markdown]     (what the working tree's policy/ changes against GIT_REF, default HEAD)`;

function fail(msg: string): never {
  process.stderr.write(`error: ${msg}\n${USAGE}\n`);
  process.exit(2);
}
const argv = process.argv.slice(2);
if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const [command, ...rest] = argv;
if (command === 'explain') await explain(rest);
else if (command === 'diff') await diff(rest);
else fail(`unknown command ${command}`);

async function explain(args: string[]): Promise<void> {
  let values: { client?: string; tier?: string; service?: string; method: string; path?: string; json: boolean };
  try {
    values = parseArgs({
      args,
      options: {
        client: { type: 'string' },
        tier: { type: 'string' },
        service: { type: 'string' },
        method: { type: 'string', default: 'GET' },
        path: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
    }).values as typeof values;
  } catch (e) {
    // node:util's parseArgs: an unknown option, a missing value, a stray argument.
    fail((e as Error).message);
  }
  if (!values.path) fail('--path is required');
  if (!values.client && !(values.tier && values.service)) fail('give --client (gateway) or --tier and --service (egress)');

  await ensureToolsOrExit(toolsFor('policy'), 'npm run policy');
  let spec: PolicySpec;
  try {
    spec = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data');
  } catch (e) {
    process.stderr.write(`${(e as PolicyError).message}\n`);
    process.exit(1);
  }
  const KEY = 'explain-key';
  if (values.client && !spec.clients.some((c) => c.id === values.client))
    process.stderr.write(`note: no client "${values.client}" in policy/data/clients.yaml: the key will be unknown\n`);
  const hashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(c.id === values.client ? KEY : `other-${c.id}`)]));
  const bundle = buildBundle(spec, hashes);
  const dir = mkdtempSync(join(tmpdir(), 'agentd-explain-'));
  // The sandbox explained is active (the egress policy refuses sandboxes missing from agentd's registry).
  const exp = Math.floor(Date.now() / 1000) + 300;
  const registry = await new RegistryServer(join(dir, 'registry'), values.tier ? { sbx_explain: { tier: values.tier, exp } } : {}).start();
  const opa = await startOpa(dir, bundle.bytes, { registry: registry.opaInput() });
  const client = new ExtAuthzClient(opa.grpcPort);
  try {
    const method = values.method!.toUpperCase();
    const answer = values.client
      ? await client.check({ contextExtensions: { policy: 'gateway' }, method, path: values.path!, headers: { 'x-api-key': KEY } })
      : await client.check({
          contextExtensions: { policy: 'egress', service: values.service! },
          method,
          path: values.path!,
          host: values.service!,
          jwtClaims: { sub: 'sbx_explain', tier: values.tier!, iss: 'agentd', aud: 'agentd-egress', exp },
        });
    if (values.json) {
      process.stdout.write(JSON.stringify(answer, null, 2) + '\n');
    } else {
      const who = values.client ? `client ${values.client}` : `a ${values.tier} sandbox calling ${values.service}`;
      process.stdout.write(`${answer.allowed ? 'ALLOWED' : 'DENIED'}: ${who}, ${method} ${values.path}\n`);
      if (!answer.allowed) process.stdout.write(`  status ${answer.status}, reason ${answer.body?.error?.code}: ${answer.body?.error?.message}\n`);
      const meta = Object.entries(answer.dynamicMetadata)
        .filter(([k]) => k !== 'decision_id')
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      process.stdout.write(`  metadata: ${meta}\n  policy revision ${bundle.revision} (decided by OPA ${opa.grpcPort} over ext_authz gRPC)\n`);
    }
    process.exitCode = answer.allowed ? 0 : 1;
  } finally {
    client.close();
    await opa.process.stop();
    await registry.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function diff(args: string[]): Promise<void> {
  let values: { base: string; json: boolean; markdown: boolean };
  try {
    values = parseArgs({
      args,
      options: { base: { type: 'string', default: 'HEAD' }, json: { type: 'boolean', default: false }, markdown: { type: 'boolean', default: false } },
    }).values as typeof values;
  } catch (e) {
    fail((e as Error).message);
  }
  if (values.base === '') fail('--base needs a git ref, e.g. HEAD~1 or origin/main');
  if (values.json && values.markdown) fail('--json or --markdown, not both');
  const found = policyCommitOf(ROOT, values.base);
  if ('problem' in found) fail(`--base ${found.problem}`);
  const { commit } = found as { commit: string };
  await ensureToolsOrExit(toolsFor('policy'), 'npm run policy');
  try {
    process.stderr.write(`comparing policy/ at ${values.base} (${commit.slice(0, 12)}) with the working tree's, decided by OPA\n`);
    const result = await diffAgainstCommit(ROOT, values.base, commit);
    if (values.json) {
      const report = { base: { ref: values.base, commit, revision: result.base.revision }, head: { revision: result.head.revision }, changes: result.changes };
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else if (values.markdown) {
      // A pull request comment (the GitHub workflow posts it): the lines as they print, fenced.
      const summary = `${result.changes.length} change${result.changes.length === 1 ? '' : 's'} over ${result.probes} requests per side, decided by OPA`;
      process.stdout.write(`### Policy decisions against \`${values.base}\`\n\n\`\`\`text\n${formatChanges(result.changes)}\n\`\`\`\n\n${summary}\n`);
    } else {
      process.stdout.write(`${formatChanges(result.changes)}\n`);
      const count = (kind: string) => result.changes.filter((c) => c.kind === kind).length;
      if (result.changes.length > 0) {
        process.stderr.write(
          `${result.changes.length} changes (${count('gateway')} gateway, ${count('egress')} egress, ${count('limit')} limit) over ${result.probes} requests per side\n`,
        );
      }
    }
  } catch (e) {
    // Invalid policy data: the files and fixes, as everywhere. Anything else (git, OPA refusing
    // a side's Rego): its message, without a stack trace.
    process.stderr.write(e instanceof PolicyError ? `${e.message}\n` : `error: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}
