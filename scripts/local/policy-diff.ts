// The effectful half of `npm run policy -- diff`: two policies (directories shaped like policy/,
// with data/ and rego/) each built into a bundle and served by its own real OPA, every probe of
// policy/decision-diff.ts asked of both over ext_authz gRPC as Envoy would ask, and the answers
// compared. The CLI hands it policy/ at a git ref and the working tree; the tests, two scratch
// directories.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IDENTITY_HEADERS } from '../../agentd/src/contract.ts';
import { buildBundle, readRegoSources, sha256Hex, type Bundle } from '../../policy/bundle.ts';
import { compareDecisions, probeKey, probesOf, type Decision, type DecisionChange, type Probe } from '../../policy/decision-diff.ts';
import { loadPolicySpec, type PolicySpec } from '../../policy/spec.ts';
import { ExtAuthzClient, RegistryServer, startOpa, type AuthzAnswer, type RunningOpa } from './opa.ts';

export interface PolicyDir {
  /** A directory with data/ (the YAML) and rego/ (the policy's Rego), as policy/ is. */
  readonly dir: string;
  /** How messages name it, e.g. `policy` or `HEAD~1:policy`: errors then read `HEAD~1:policy/data/roles.yaml`. */
  readonly label: string;
}

export interface PolicyDiff {
  /** The bundles' revisions (content hashes, built with the same stand-in keys: equal policies, equal revisions). */
  readonly base: { readonly revision: string };
  readonly head: { readonly revision: string };
  /** How many requests each OPA was asked. */
  readonly probes: number;
  readonly changes: readonly DecisionChange[];
}

/** Requests in flight per OPA: enough to keep it busy, few enough for a 2-core machine. */
const CONCURRENCY = 64;

/** The key each client presents. Fixed, so that both sides know every client by the same key. */
const keyOf = (client: string) => `policy-diff-key-${client}`;
/** The one active sandbox of each tier, in the registry both OPAs poll. */
const sandboxOf = (tier: string) => `sbx-policy-diff-${tier}`;

function bundleOf(spec: PolicySpec, policy: PolicyDir): Bundle {
  const keyHashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(keyOf(c.id))]));
  return buildBundle(spec, keyHashes, readRegoSources(join(policy.dir, 'rego')));
}

function decisionOf(probe: Probe, answer: AuthzAnswer): Decision {
  // A refusal's reason is the error code of the body OPA has Envoy send.
  if (!answer.allowed) return { allowed: false, reason: answer.body?.error?.code ?? `status ${answer.status}` };
  if (probe.kind === 'egress') return { allowed: true, reason: null };
  const tier = answer.dynamicMetadata['tier'];
  return {
    allowed: true,
    reason: null,
    identity: {
      role: answer.headers[IDENTITY_HEADERS.clientRole] ?? '',
      scope: answer.headers[IDENTITY_HEADERS.clientScope] ?? '',
      sandboxTiers: answer.headers[IDENTITY_HEADERS.sandboxTiers] ?? '',
    },
    ...(typeof tier === 'string' ? { rateLimitTier: tier } : {}),
  };
}

async function ask(client: ExtAuthzClient, probes: readonly Probe[], tokenExpiry: number): Promise<Map<string, Decision>> {
  const decisions = new Map<string, Decision>();
  for (let i = 0; i < probes.length; i += CONCURRENCY) {
    await Promise.all(
      probes.slice(i, i + CONCURRENCY).map(async (probe) => {
        const answer =
          probe.kind === 'gateway'
            ? await client.check({
                contextExtensions: { policy: 'gateway' },
                method: probe.method,
                path: probe.path,
                headers: { 'x-api-key': keyOf(probe.client) },
              })
            : await client.check({
                contextExtensions: { policy: 'egress', service: probe.service },
                method: probe.method,
                path: probe.path,
                host: probe.service,
                jwtClaims: { sub: sandboxOf(probe.tier), tier: probe.tier, iss: 'agentd', aud: 'agentd-egress', exp: tokenExpiry },
              });
        decisions.set(probeKey(probe), decisionOf(probe, answer));
      }),
    );
  }
  return decisions;
}

/**
 * What `head` changes against `base`, decided by the real OPA. Invalid policy data on either side
 * throws its PolicyError (naming the file by the side's label) before any OPA starts.
 */
export async function diffPolicies(base: PolicyDir, head: PolicyDir): Promise<PolicyDiff> {
  const baseSpec = loadPolicySpec(join(base.dir, 'data'), join(base.label, 'data'));
  const headSpec = loadPolicySpec(join(head.dir, 'data'), join(head.label, 'data'));
  const baseBundle = bundleOf(baseSpec, base);
  const headBundle = bundleOf(headSpec, head);
  const probes = probesOf(baseSpec, headSpec);

  const work = mkdtempSync(join(tmpdir(), 'agentd-policy-diff-'));
  const now = Math.floor(Date.now() / 1000);
  const tiers = [...new Set([...Object.keys(baseSpec.sandboxTiers), ...Object.keys(headSpec.sandboxTiers)])];
  const opas: RunningOpa[] = [];
  const clients: ExtAuthzClient[] = [];
  let registry: RegistryServer | undefined;
  try {
    // Egress decisions need the sandbox alive in agentd's registry; one registry serves both OPAs.
    registry = await new RegistryServer(join(work, 'registry'), Object.fromEntries(tiers.map((t) => [sandboxOf(t), { tier: t, exp: now + 3600 }]))).start();
    const registryInput = registry.opaInput();
    const started = await Promise.allSettled(
      [baseBundle, headBundle].map((b, i) => startOpa(join(work, i === 0 ? 'base' : 'head'), b.bytes, { registry: registryInput })),
    );
    for (const s of started) if (s.status === 'fulfilled') opas.push(s.value);
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    const [baseClient, headClient] = opas.map((o) => new ExtAuthzClient(o.grpcPort)) as [ExtAuthzClient, ExtAuthzClient];
    clients.push(baseClient, headClient);
    const tokenExpiry = now + 600;
    const [baseDecisions, headDecisions] = await Promise.all([ask(baseClient, probes, tokenExpiry), ask(headClient, probes, tokenExpiry)]);
    return {
      base: { revision: baseBundle.revision },
      head: { revision: headBundle.revision },
      probes: probes.length,
      changes: compareDecisions(probes, { spec: baseSpec, decisions: baseDecisions }, { spec: headSpec, decisions: headDecisions }),
    };
  } finally {
    for (const c of clients) c.close();
    await Promise.all(opas.map((o) => o.process.stop()));
    await registry?.close();
    rmSync(work, { recursive: true, force: true });
  }
}

/** The commit `ref` names in the repository at `root` (one with policy/data), or why it names none. */
export function policyCommitOf(root: string, ref: string): { commit: string } | { problem: string } {
  // --end-of-options: a ref that starts with "-" is a ref, never an option of git.
  const r = spawnSync('git', ['-C', root, 'rev-parse', '--verify', '--quiet', '--end-of-options', `${ref}^{commit}`], { encoding: 'utf8' });
  if (r.status !== 0) return { problem: `${ref}: not a commit of this repository` };
  const commit = r.stdout.trim();
  if (spawnSync('git', ['-C', root, 'cat-file', '-e', `${commit}:policy/data`]).status !== 0) return { problem: `${ref}: that commit has no policy/data` };
  return { commit };
}

/**
 * The decision diff of the working tree's policy/ (under `root`) against policy/ at `commit`,
 * which is read from git into a scratch directory (removed afterwards). `ref` names it in messages.
 */
export async function diffAgainstCommit(root: string, ref: string, commit: string): Promise<PolicyDiff> {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-policy-base-'));
  try {
    const archive = spawnSync('git', ['-C', root, 'archive', '--format=tar', commit, 'policy'], { maxBuffer: 256 * 1024 * 1024 });
    if (archive.status !== 0) throw new Error(`git archive ${commit} policy failed: ${archive.stderr.toString().trim()}`);
    const untar = spawnSync('tar', ['-x', '-C', dir], { input: archive.stdout });
    if (untar.status !== 0) throw new Error(`unpacking policy/ of ${commit} failed: ${untar.stderr.toString().trim()}`);
    // The label is git's name for the files, so an error reads `HEAD~1:policy/data/roles.yaml`.
    return await diffPolicies({ dir: join(dir, 'policy'), label: `${ref}:policy` }, { dir: join(root, 'policy'), label: 'policy' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
