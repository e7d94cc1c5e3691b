// npm run render -- [--stack NAME] [--out DIR]: writes every generated file of a stack (Envoy
// configs, SDS files, OPA config and bundle, and with monitoring on Prometheus, rules, Loki,
// Alloy, Grafana and its dashboards) so they can be read and diffed, without deploying.
// API keys exist only at deploy time: the bundle here holds placeholder key hashes (said in the
// output's README), so its revision differs from the deployed one; secret files (Grafana's admin
// password, tokens, credentials) are not written; everything else is exact.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { checkAgainstSpec, parseStackConfig } from '../components/config.ts';
import { platformRenderInput } from '../components/platform.ts';
import { monitoringRenderInput } from '../components/monitoring.ts';
import { renderMonitoringFiles } from '../components/render/overlay/index.ts';
import { fileBytes, renderPlatform, type FileContent } from '../components/render/platform.ts';
import { dockerAddress } from '../components/targets/docker.ts';
import { kubernetesAddress } from '../components/targets/kubernetes.ts';
import { sha256Hex } from '../policy/bundle.ts';
import { loadPolicySpec } from '../policy/spec.ts';
import { ROOT, stackArg, stackFileConfig } from './pulumi-env.ts';

const USAGE = `usage: npm run render -- [--stack NAME] [--out DIR]
  Writes every generated file of a stack (default dev) to DIR (default build/rendered/NAME).`;
const { stack, rest } = stackArg(process.argv.slice(2), USAGE);
const outIdx = rest.indexOf('--out');
const out = outIdx === -1 ? join(ROOT, 'build/rendered', stack) : (rest[outIdx + 1] ?? '');
const unknown = outIdx === -1 ? rest : rest.filter((_, i) => i !== outIdx && i !== outIdx + 1);
if (!out || out.startsWith('-') || unknown.length > 0) {
  process.stderr.write(`${!out || out.startsWith('-') ? '--out needs a directory' : `unknown argument ${unknown[0]}`}\n${USAGE}\n`);
  process.exit(2);
}

const raw = Object.fromEntries(Object.entries(stackFileConfig(stack)).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
const config = parseStackConfig(raw, stack);
const spec = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data');
checkAgainstSpec(config, Object.keys(spec.egressServices));
const configured = Object.values(spec.egressServices)
  .filter((s) => s.credential && `egress:${s.credential.secret}` in raw)
  .map((s) => s.id);
const placeholderHashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(`placeholder-key-of-${c.id}`)]));
const address = config.target === 'docker' ? dockerAddress : kubernetesAddress(config.kubernetes.namespace);
const rendered = renderPlatform(spec, platformRenderInput(config, { address }, configured, placeholderHashes));
const monitoring = config.monitoring.enabled
  ? renderMonitoringFiles(
      spec,
      monitoringRenderInput({
        kind: config.target,
        address,
        dockerPrefix: `agentd-${stack}`,
        namespace: config.kubernetes.namespace,
        adminPassword: 'not-rendered',
      }),
    )
  : undefined;
const workloads: Record<string, Readonly<Record<string, FileContent>>> = { gateway: rendered.gateway, egress: rendered.egress, opa: rendered.opa };
for (const [name, w] of Object.entries(monitoring ?? {})) workloads[name] = w.files;

rmSync(out, { recursive: true, force: true });
let count = 0;
for (const [workload, files] of Object.entries(workloads)) {
  for (const [p, content] of Object.entries(files)) {
    const file = join(out, workload, p);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, fileBytes(content));
    count++;
  }
}
writeFileSync(
  join(out, 'README.md'),
  `Rendered from policy/data and stacks/Pulumi.${stack}.yaml (target ${config.target}).\n\nThe OPA bundle holds placeholder key hashes: API keys are generated at deploy time.\nCredentials configured for: ${configured.join(', ') || 'none'}; other services answer 503 credential_not_configured.\n`,
);
process.stdout.write(`wrote ${count} files to ${relative(process.cwd(), out) || '.'} (stack ${stack}, target ${config.target})\n`);
