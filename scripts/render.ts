// npm run render -- [--stack NAME] [--out DIR]: writes the whole plan of a stack (plan.json:
// every workload, its command line, ports, secret references, the network between workloads;
// and every generated file: Envoy configs, SDS files, OPA config and bundle, and with monitoring
// on Prometheus, rules, Loki, Alloy, Grafana and its dashboards) so it can be read and diffed,
// without deploying. API keys exist only at deploy time: the bundle here holds placeholder key
// hashes (said in the output's README), so its revision differs from the deployed one; secret
// files (Grafana's admin password, tokens, credentials) are references in plan.json, never
// values; everything else is exact.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { checkAgainstSpec, specIds, parseStackConfig } from '../components/config.ts';
import { planFiles, planPlatform, renderPlanBundle } from '../components/render/plan.ts';
import { fileBytes, type FileContent } from '../components/render/platform.ts';
import { dockerCapabilities, dockerPrefixOf } from '../components/targets/docker.ts';
import { kubernetesCapabilities } from '../components/targets/kubernetes.ts';
import { sha256Hex } from '../policy/bundle.ts';
import { loadPolicySpec } from '../policy/spec.ts';
import { ephemeralBundleSigner } from './local/fixtures.ts';
import { ROOT, stackArg, stackFileRawConfig } from './pulumi-env.ts';

const USAGE = `usage: npm run render -- [--stack NAME] [--out DIR]
  Writes the whole plan of a stack (default dev), plan.json and every generated file, to DIR (default build/rendered/NAME).`;
const { stack, rest } = stackArg(process.argv.slice(2), USAGE);
const outIdx = rest.indexOf('--out');
const out = outIdx === -1 ? join(ROOT, 'build/rendered', stack) : (rest[outIdx + 1] ?? '');
const unknown = outIdx === -1 ? rest : rest.filter((_, i) => i !== outIdx && i !== outIdx + 1);
if (!out || out.startsWith('-') || unknown.length > 0) {
  process.stderr.write(`${!out || out.startsWith('-') ? '--out needs a directory' : `unknown argument ${unknown[0]}`}\n${USAGE}\n`);
  process.exit(2);
}

const raw = stackFileRawConfig(stack);
const config = parseStackConfig(raw, stack);
const spec = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data');
checkAgainstSpec(config, specIds(spec));
const configured = Object.values(spec.egressServices)
  .filter((s) => s.credential && `egress:${s.credential.secret}` in raw)
  .map((s) => s.id);
const placeholderHashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(`placeholder-key-of-${c.id}`)]));
const capabilities = config.target === 'docker' ? dockerCapabilities(dockerPrefixOf(stack)) : kubernetesCapabilities(config.kubernetes.namespace);
const plan = planPlatform(spec, config, capabilities, configured);
// Signed, as deployed, but with a key made for this render (a deploy makes its own and keeps it).
const bundle = renderPlanBundle(plan, spec, placeholderHashes, ephemeralBundleSigner());
const files: Record<string, FileContent> = { ...planFiles(plan) };
for (const [p, content] of Object.entries(bundle.files)) files[`${plan.bundleServer.workload}/${p}`] = content;

rmSync(out, { recursive: true, force: true });
for (const [p, content] of Object.entries(files)) {
  mkdirSync(dirname(join(out, p)), { recursive: true });
  writeFileSync(join(out, p), fileBytes(content));
}
writeFileSync(
  join(out, 'README.md'),
  `Rendered from policy/data and stacks/Pulumi.${stack}.yaml (target ${config.target}).\n\nplan.json lists every workload (image role, arguments, environment, ports, files, secret files by reference) and the network between workloads; each workload's files are under its name.\nThe OPA bundle holds placeholder key hashes, and is signed with a key made for this render: API keys and the signing key are generated at deploy time.\nCredentials configured for: ${configured.join(', ') || 'none'}; other services answer 503 credential_not_configured.\n`,
);
process.stdout.write(`wrote ${Object.keys(files).length} files to ${relative(process.cwd(), out) || '.'} (stack ${stack}, target ${config.target})\n`);
