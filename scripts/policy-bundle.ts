// npm run policy:bundle: builds the OPA bundle at build/bundles/agentd-bundle.tar.gz (the path
// of the original system), with the hashes of the development keys (build/dev/api-keys.json).
// Deployed stacks build their own bundle with their own keys.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { buildBundle, sha256Hex } from '../policy/bundle.ts';
import { loadPolicySpec, PolicyError } from '../policy/spec.ts';
import { DEV_KEYS_FILE, devApiKeys } from './dev-keys.ts';
import { ROOT, noArguments } from './pulumi-env.ts';

const USAGE = 'usage: npm run policy:bundle\n  Builds build/bundles/agentd-bundle.tar.gz from policy/data with the development keys (build/dev/api-keys.json).';
noArguments(process.argv.slice(2), USAGE);
try {
  const spec = loadPolicySpec(join(ROOT, 'policy/data'), 'policy/data');
  const keys = devApiKeys(spec);
  const bundle = buildBundle(spec, Object.fromEntries(Object.entries(keys).map(([id, k]) => [id, sha256Hex(k)])));
  const out = join(ROOT, 'build/bundles/agentd-bundle.tar.gz');
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, bundle.bytes);
  process.stdout.write(`wrote ${relative(process.cwd(), out)} (${bundle.bytes.length} bytes, revision ${bundle.revision})\n`);
  process.stdout.write(`files: ${Object.keys(bundle.files).join(', ')}\n`);
  process.stdout.write(`key hashes of the development keys in ${relative(process.cwd(), DEV_KEYS_FILE)}\n`);
} catch (e) {
  process.stderr.write(`${e instanceof PolicyError ? e.message : (e as Error).stack}\n`);
  process.exit(1);
}
