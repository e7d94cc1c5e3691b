// The policy proven against the real OPA with the Envoy ext_authz plugin: `opa test` with
// coverage, then decision tables generated from the data sent as ext_authz v3 gRPC Check calls
// to OPA serving the built bundle, each answer compared with an independent oracle.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { buildBundle, sha256Hex, BUNDLE_DATA_PATH, BUNDLE_ROOTS, rootsOverlap } from '../../policy/bundle.ts';
import { IDENTITY_HEADERS, REGISTRY_BUNDLE_PATH, REGISTRY_BUNDLE_ROOT } from '../../agentd/src/contract.ts';
import {
  OPA_BUNDLE_NAME,
  OPA_REGISTRY_BUNDLE_NAME,
  OPA_POLICY_SERVICE,
  OPA_REGISTRY_SERVICE,
  POLICY_BUNDLE_RESOURCE,
  REGISTRY_LONG_POLLING_TIMEOUT_SECONDS,
  opaRunArgs,
  renderOpaConfig,
} from '../../components/render/opa.ts';
import { POLICY_SIGNING_KEY_ID } from '../../policy/signing.ts';
import { ExtAuthzClient, RegistryServer, startOpa, type AuthzAnswer, type RegistryEntry, type RunningOpa } from '../../scripts/local/opa.ts';
import { freePort, sleep } from '../../scripts/local/processes.ts';
import { REPO_ROOT, run, toolPath } from '../../scripts/local/tools.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { instantiate } from '../../policy/probes.ts';
import { egressPaths, expectEgress, expectGateway, gatewayRoutes, LIVE_SANDBOX, METHODS, type SandboxState } from './oracle.ts';

async function waitFor(what: string, f: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await f()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** OPA's decision_cache_lookups_total (the plugin's decision cache), by outcome. */
async function cacheLookups(o: RunningOpa): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${o.httpPort}/metrics`);
  expect(res.status).toBe(200);
  const out: Record<string, number> = {};
  for (const m of (await res.text()).matchAll(/^decision_cache_lookups_total\{outcome="(\w+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

const spec = shippedSpec();
const keyOf = (id: string) => `test-key-${id}-0123456789abcdef`;
const keyHashes = Object.fromEntries(spec.clients.map((c) => [c.id, sha256Hex(keyOf(c.id))]));
const bundle = buildBundle(spec, keyHashes);

describe('opa test over the Rego', () => {
  it('passes every test with at least 90% coverage', () => {
    const r = run(toolPath('opa'), ['test', join(REPO_ROOT, 'policy/rego'), join(REPO_ROOT, 'policy/mask'), '--coverage', '--format', 'json']);
    expect(r.stderr).toBe('');
    const report = JSON.parse(r.stdout) as { coverage: number; files: Record<string, { coverage: number }> };
    expect(report.coverage).toBeGreaterThanOrEqual(90);
    const plain = run(toolPath('opa'), ['test', join(REPO_ROOT, 'policy/rego'), join(REPO_ROOT, 'policy/mask')]);
    expect(plain.code, plain.stdout + plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/PASS: \d+\/\d+/);
  });

  it('passes opa check --strict and opa fmt', () => {
    const check = run(toolPath('opa'), ['check', '--strict', join(REPO_ROOT, 'policy/rego'), join(REPO_ROOT, 'policy/mask')]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    const fmt = run(toolPath('opa'), ['fmt', '--list', join(REPO_ROOT, 'policy/rego'), join(REPO_ROOT, 'policy/mask')]);
    expect(fmt.stdout.trim(), 'files opa fmt would change').toBe('');
  });
});

describe('decision tables against the real OPA and its Envoy plugin', () => {
  let opa: RunningOpa;
  let client: ExtAuthzClient;
  let registry: RegistryServer;
  const now = () => Math.floor(Date.now() / 1000);
  // One active sandbox per tier (as agentd lists them), and one that flips during a test.
  const sandboxOf = (tier: string) => `sbx-${tier}`;
  const activeSandboxes = () => Object.fromEntries(Object.keys(spec.sandboxTiers).map((t) => [sandboxOf(t), { tier: t, exp: now() + 3600 }]));
  const egressCheck = (service: string, method: string, path: string, claims: Record<string, unknown>) =>
    client.check({
      contextExtensions: { policy: 'egress', service },
      method,
      path,
      host: service,
      jwtClaims: { iss: 'agentd', aud: 'agentd-egress', ...claims },
    });
  /** A request the policy data allows, for each tier that is granted a service. */
  const allowedCalls = () =>
    Object.values(spec.sandboxTiers).flatMap((t) =>
      t.services.slice(0, 1).map((service) => {
        const s = spec.egressServices[service]!;
        return { tier: t.id, service, method: s.allowedMethods[0]!, path: instantiate(s.allowedPaths[0]!) };
      }),
    );

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agentd-opa-'));
    // agentd answers the first request late: OPA must not be reported ready before it has the registry.
    registry = await new RegistryServer(join(dir, 'registry'), activeSandboxes(), { delayFirstMs: 1000 }).start();
    opa = await startOpa(join(dir, 'opa'), bundle.bytes, { registry: registry.opaInput() });
    client = new ExtAuthzClient(opa.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await opa?.process.stop();
    await registry?.close();
  });

  it('loads the bundle: data at data.agentd.config, the revision from the manifest (defect 2)', async () => {
    // A transport error rejects the fetch and fails the test; each answer is checked for its status and body.
    const res = await fetch(`http://127.0.0.1:${opa.httpPort}/v1/data/agentd/config/gateway/roles`);
    expect(res.status).toBe(200);
    const roles = (await res.json()) as { result?: Record<string, unknown> };
    expect(Object.keys(roles.result ?? {}).sort()).toEqual(Object.keys(spec.roles).sort());
    // The bundle status: the policy bundle under its name, with the revision the build reports
    // and the manifest's roots.
    const status = await fetch(`http://127.0.0.1:${opa.httpPort}/v1/data/system/bundles`);
    expect(status.status).toBe(200);
    const bundles = (await status.json()) as { result?: Record<string, { manifest?: { revision?: string; roots?: string[] } }> };
    const built = JSON.parse(bundle.files['.manifest']!) as { roots: string[] };
    expect(bundles.result?.[OPA_BUNDLE_NAME]?.manifest).toMatchObject({ revision: bundle.revision, roots: built.roots });
    const metricsRes = await fetch(`http://127.0.0.1:${opa.httpPort}/metrics`);
    expect(metricsRes.status).toBe(200);
    const metrics = await metricsRes.text();
    expect(metrics).toContain(bundle.revision);
  });

  it('loads the registry from agentd (bearer token from the file, long polling) before it reports healthy', async () => {
    // startOpa returned on /health?bundles: the registry is there without any waiting.
    const res = await fetch(`http://127.0.0.1:${opa.httpPort}/v1/data/${REGISTRY_BUNDLE_ROOT}/active`);
    expect(res.status).toBe(200);
    const active = ((await res.json()) as { result?: Record<string, unknown> }).result ?? {};
    expect(Object.keys(active).sort()).toEqual(Object.keys(activeSandboxes()).sort());
    expect(registry.requests.length).toBeGreaterThan(0);
    expect(registry.requests.every((r) => r.authorization === `Bearer ${registry.token}`)).toBe(true);
    expect(registry.requests[0]!.prefer).toContain(`wait=${REGISTRY_LONG_POLLING_TIMEOUT_SECONDS}`);
    expect(registry.requests[0]!.status).toBe(200);
    // Both bundles are active, under disjoint roots.
    const bundlesRes = await fetch(`http://127.0.0.1:${opa.httpPort}/v1/data/system/bundles`);
    expect(bundlesRes.status).toBe(200);
    const bundles = (await bundlesRes.json()) as { result?: Record<string, { manifest?: { roots?: string[] } }> };
    expect(Object.keys(bundles.result ?? {}).sort()).toEqual([OPA_BUNDLE_NAME, OPA_REGISTRY_BUNDLE_NAME].sort());
    expect(bundles.result?.[OPA_REGISTRY_BUNDLE_NAME]?.manifest?.roots).toEqual([REGISTRY_BUNDLE_ROOT]);
  });

  it('gateway: every client x route x method gets the right answer, with scope and sandbox tiers', async () => {
    const cases = spec.clients.flatMap((c) => gatewayRoutes(spec).flatMap((path) => METHODS.map((method) => ({ c, path, method }))));
    const unknown = gatewayRoutes(spec).map((path) => ({ c: { id: 'nobody' }, path, method: 'GET' }));
    const all = [...cases, ...unknown];
    const wrong: string[] = [];
    const identityChecked = new Set<string>();
    // Twice: evaluated, then answered from the decision cache (the same answers, every one a hit).
    const before = await cacheLookups(opa);
    for (const pass of ['evaluated', 'cached'])
      for (let i = 0; i < all.length; i += 50) {
        await Promise.all(
          all.slice(i, i + 50).map(async ({ c, path, method }) => {
            const want = expectGateway(spec, c.id, method, path);
            const got = await client.check({ contextExtensions: { policy: 'gateway' }, method, path, headers: { 'x-api-key': keyOf(c.id) } });
            if (got.allowed !== want.allowed || (!want.allowed && (got.status !== want.status || got.body?.error?.code !== want.reason))) {
              wrong.push(`${pass}: ${c.id} ${method} ${path}: want ${JSON.stringify(want)}, got ${got.allowed} ${got.status} ${got.body?.error?.code}`);
            }
            if (got.allowed && want.allowed) {
              // Exactly the identity agentd is to trust, nothing more, nothing less.
              if (!isDeepStrictEqual(got.headers, want.headers)) {
                wrong.push(`${pass}: ${c.id} ${method} ${path}: headers want ${JSON.stringify(want.headers)}, got ${JSON.stringify(got.headers)}`);
              }
              identityChecked.add(c.id);
              expect(got.dynamicMetadata).toMatchObject({ client_id: c.id, tier: spec.clients.find((x) => x.id === c.id)?.rateLimitTier });
            }
          }),
        );
      }
    expect(all.length).toBeGreaterThan(300);
    expect(wrong).toEqual([]);
    const after = await cacheLookups(opa);
    expect((after['hit'] ?? 0) - (before['hit'] ?? 0), 'second pass answered from the cache').toBe(all.length);
    // Every enabled client was allowed somewhere, so its scope and tiers were checked.
    expect([...identityChecked].sort()).toEqual(
      spec.clients
        .filter((c) => c.enabled)
        .map((c) => c.id)
        .sort(),
    );
  });

  it('gateway: the identity headers per shipped role (admin: all tiers, scope all; operator: all but admin; reader: none)', async () => {
    const headersOf = async (id: string) =>
      (await client.check({ contextExtensions: { policy: 'gateway' }, method: 'GET', path: '/api/v1/status', headers: { 'x-api-key': keyOf(id) } })).headers;
    expect(await headersOf('admin')).toEqual({
      [IDENTITY_HEADERS.clientId]: 'admin',
      [IDENTITY_HEADERS.clientRole]: 'admin',
      [IDENTITY_HEADERS.clientScope]: 'all',
      [IDENTITY_HEADERS.sandboxTiers]: 'admin,default,premium,restricted,standard',
    });
    expect(await headersOf('ci')).toEqual({
      [IDENTITY_HEADERS.clientId]: 'ci',
      [IDENTITY_HEADERS.clientRole]: 'operator',
      [IDENTITY_HEADERS.clientScope]: 'own',
      [IDENTITY_HEADERS.sandboxTiers]: 'default,premium,restricted,standard',
    });
    expect(await headersOf('dashboard')).toEqual({
      [IDENTITY_HEADERS.clientId]: 'dashboard',
      [IDENTITY_HEADERS.clientRole]: 'reader',
      [IDENTITY_HEADERS.clientScope]: 'own',
      [IDENTITY_HEADERS.sandboxTiers]: '',
    });
  });

  it('egress: every sandbox tier x service x method x allowed and denied path gets the right answer', async () => {
    const exp = now() + 600;
    const all = Object.keys(spec.sandboxTiers).flatMap((tier) =>
      Object.keys(spec.egressServices).flatMap((service) =>
        egressPaths(spec, service).flatMap((path) => METHODS.map((method) => ({ tier, service, path, method }))),
      ),
    );
    const wrong: string[] = [];
    // Twice: evaluated, then answered from the decision cache (each answer read the clock and
    // states the token's exp as its end; every one a hit).
    const before = await cacheLookups(opa);
    for (const pass of ['evaluated', 'cached'])
      for (let i = 0; i < all.length; i += 50) {
        await Promise.all(
          all.slice(i, i + 50).map(async ({ tier, service, path, method }) => {
            const want = expectEgress(spec, tier, service, method, path);
            const got = await egressCheck(service, method, path, { sub: sandboxOf(tier), tier, exp });
            if (got.allowed !== want.allowed || (!want.allowed && (got.status !== want.status || got.body?.error?.code !== want.reason))) {
              wrong.push(
                `${pass}: ${tier} ${service} ${method} ${path}: want ${JSON.stringify(want)}, got ${got.allowed} ${got.status} ${got.body?.error?.code}`,
              );
            }
            if (got.allowed) expect(got.dynamicMetadata).toMatchObject({ sandbox_id: sandboxOf(tier), tier, service });
          }),
        );
      }
    expect(all.length).toBeGreaterThan(1000);
    expect(all.filter((c) => expectEgress(spec, c.tier, c.service, c.method, c.path).allowed).length).toBeGreaterThan(50);
    expect(wrong).toEqual([]);
    const after = await cacheLookups(opa);
    expect((after['hit'] ?? 0) - (before['hit'] ?? 0), 'second pass answered from the cache').toBe(all.length);
  });

  it('egress: GitHub admits contents, issues, pulls, search and /user, and nothing that changes access, settings or refs', async () => {
    const tier = 'admin'; // every service: the widest sandbox
    const allowed: [string, string][] = [
      ['GET', '/user'],
      ['GET', '/repos/o/r/contents/README.md'],
      ['PUT', '/repos/o/r/contents/src/a.ts'],
      ['GET', '/repos/o/r/contents'],
      ['GET', '/repos/o/r/issues'],
      ['POST', '/repos/o/r/issues'],
      ['PATCH', '/repos/o/r/issues/1'],
      ['POST', '/repos/o/r/issues/1/comments'],
      ['GET', '/repos/o/r/pulls'],
      ['POST', '/repos/o/r/pulls'],
      ['PATCH', '/repos/o/r/pulls/2'],
      ['POST', '/repos/o/r/pulls/2/reviews'],
      ['GET', '/search/code?q=x'],
      ['GET', '/search/issues'],
    ];
    const refused: [string, string][] = [
      ['PATCH', '/repos/o/r'], // settings, visibility, default branch
      ['POST', '/repos/o/r/keys'],
      ['POST', '/repos/o/r/hooks'],
      ['PATCH', '/repos/o/r/hooks/1'],
      ['PUT', '/repos/o/r/collaborators/mallory'],
      ['POST', '/repos/o/r/invitations'],
      ['POST', '/repos/o/r/transfer'],
      ['POST', '/repos/o/r/forks'],
      ['POST', '/repos/o/r/git/refs'],
      ['PATCH', '/repos/o/r/git/refs/heads/main'],
      ['PUT', '/repos/o/r/branches/main/protection'],
      ['PUT', '/repos/o/r/actions/secrets/TOKEN'],
      ['POST', '/repos/o/r/dispatches'],
      ['POST', '/user/keys'],
      ['POST', '/user/repos'],
      ['DELETE', '/repos/o/r/contents/README.md'],
      ['DELETE', '/repos/o/r'],
      ['PUT', '/repos/o/r/contents/../keys'],
      ['PATCH', '/repos/o/r/issues/../../../r'],
    ];
    expect(allowed.length + refused.length).toBe(33);
    const wrong: string[] = [];
    for (const [method, path] of [...allowed, ...refused]) {
      const want = expectEgress(spec, tier, 'github', method, path);
      const got = await egressCheck('github', method, path, { sub: sandboxOf(tier), tier, exp: now() + 600 });
      const expected = allowed.some(([m, p]) => m === method && p === path);
      if (got.allowed !== expected || want.allowed !== expected)
        wrong.push(`${method} ${path}: want ${expected}, oracle ${want.allowed}, OPA ${got.allowed} ${got.body?.error?.code ?? ''}`);
    }
    expect(wrong).toEqual([]);
  });

  it('egress: tokens without exp, expired tokens and sandboxes not in the registry are refused, whatever they call', async () => {
    const calls = allowedCalls();
    const variants: { name: string; claims: (tier: string) => Record<string, unknown>; sandbox: SandboxState }[] = [
      { name: 'live', claims: (tier) => ({ sub: sandboxOf(tier), tier, exp: now() + 600 }), sandbox: LIVE_SANDBOX() },
      { name: 'no exp', claims: (tier) => ({ sub: sandboxOf(tier), tier }), sandbox: { ...LIVE_SANDBOX(), exp: undefined } },
      {
        name: 'string exp',
        claims: (tier) => ({ sub: sandboxOf(tier), tier, exp: String(now() + 600) }),
        sandbox: { ...LIVE_SANDBOX(), exp: String(now() + 600) },
      },
      { name: 'expired', claims: (tier) => ({ sub: sandboxOf(tier), tier, exp: now() - 1 }), sandbox: { ...LIVE_SANDBOX(), exp: now() - 1 } },
      { name: 'not in the registry', claims: (tier) => ({ sub: 'sbx-terminated', tier, exp: now() + 600 }), sandbox: { ...LIVE_SANDBOX(), active: false } },
    ];
    expect(calls.length).toBe(Object.values(spec.sandboxTiers).filter((t) => t.services.length > 0).length);
    expect(calls.length).toBeGreaterThan(2);
    const seen = new Set<string>();
    const wrong: string[] = [];
    for (const v of variants) {
      for (const c of calls) {
        const want = expectEgress(spec, c.tier, c.service, c.method, c.path, v.sandbox);
        const got = await egressCheck(c.service, c.method, c.path, v.claims(c.tier));
        seen.add(`${v.name}: ${got.allowed ? 'allowed' : `${got.status} ${got.body?.error?.code}`}`);
        if (got.allowed !== want.allowed || got.status !== want.status || got.body?.error?.code !== want.reason) {
          wrong.push(
            `${v.name} ${c.tier} ${c.service} ${c.method} ${c.path}: want ${JSON.stringify(want)}, got ${got.allowed} ${got.status} ${got.body?.error?.code}`,
          );
        }
      }
    }
    expect(wrong).toEqual([]);
    expect([...seen].sort()).toEqual([
      'expired: 401 token_expired',
      'live: allowed',
      'no exp: 401 token_without_expiry',
      'not in the registry: 401 sandbox_not_active',
      'string exp: 401 token_without_expiry',
    ]);
  });

  it('egress: a sandbox removed from the registry is refused within a second (long polling), and admitted again when it returns', async () => {
    const { tier, service, method, path } = allowedCalls()[0]!;
    const claims = { sub: 'sbx-flip', tier, exp: now() + 600 };
    registry.set({ ...activeSandboxes(), 'sbx-flip': { tier, exp: now() + 600 } });
    await waitFor('sbx-flip to be admitted', async () => (await egressCheck(service, method, path, claims)).allowed, 5000);
    // OPA holds a long poll open: the change is pushed, not picked up by the next poll.
    await waitFor('a long poll held open by OPA', async () => registry.pending > 0, 5000);

    const flip = async (active: Record<string, RegistryEntry>, done: (a: AuthzAnswer) => boolean) => {
      registry.set(active);
      const t0 = Date.now();
      let last: AuthzAnswer | undefined;
      while (Date.now() - t0 < 3000) {
        last = await egressCheck(service, method, path, claims);
        if (done(last)) return { ms: Date.now() - t0, last };
        await sleep(20);
      }
      return { ms: Infinity, last };
    };
    const removed = await flip(activeSandboxes(), (a) => !a.allowed);
    expect(removed.last).toMatchObject({ allowed: false, status: 401, body: { error: { code: 'sandbox_not_active' } } });
    expect(removed.ms).toBeLessThan(1000);
    // Other sandboxes are not concerned by the change.
    expect((await egressCheck(service, method, path, { sub: sandboxOf(tier), tier, exp: now() + 600 })).allowed).toBe(true);

    await waitFor('the next long poll', async () => registry.pending > 0, 5000);
    const back = await flip({ ...activeSandboxes(), 'sbx-flip': { tier, exp: now() + 600 } }, (a) => a.allowed);
    expect(back.last?.allowed).toBe(true);
    expect(back.ms).toBeLessThan(1000);
    registry.set(activeSandboxes());
  });

  it('answers with `allowed`, as the Envoy plugin expects (defect 1)', async () => {
    const got = await client.check({
      contextExtensions: { policy: 'gateway' },
      method: 'GET',
      path: '/api/v1/status',
      headers: { 'x-api-key': keyOf('admin') },
    });
    expect(got.allowed).toBe(true);
    expect(got.headers['x-agentd-client-id']).toBe('admin');
    expect(got.headersToRemove).toContain('x-api-key');
    // Like the upstream plugin, the decision id travels to Envoy's access log as metadata.
    expect(got.dynamicMetadata['decision_id']).toMatch(/\w{8,}/);
  });

  it('no caller header selects the policy, the tier or the identity (defect 3)', async () => {
    const forged = {
      'x-policy': 'gateway',
      'x-agentd-policy': 'gateway',
      'x-sandbox-tier': 'admin',
      'x-agentd-client-id': 'admin',
      'x-api-key': keyOf('dashboard'),
    };
    const noContext = await client.check({ method: 'GET', path: '/api/v1/status', headers: forged });
    expect(noContext).toMatchObject({ allowed: false, status: 403, body: { error: { code: 'unknown_policy' } } });
    const asDashboard = await client.check({ contextExtensions: { policy: 'gateway' }, method: 'DELETE', path: '/api/v1/sandboxes/x1', headers: forged });
    expect(asDashboard.body?.error?.code).toBe('method_not_allowed');
    const egress = await client.check({
      contextExtensions: { policy: 'egress', service: 'slack' },
      method: 'POST',
      path: '/api/chat.postMessage',
      headers: { 'x-sandbox-tier': 'admin', 'x-sandbox-id': 'other' },
      jwtClaims: { sub: sandboxOf('standard'), tier: 'standard', exp: Math.floor(Date.now() / 1000) + 60 },
    });
    expect(egress.body?.error?.code).toBe('service_not_allowed');
    const noToken = await client.check({
      contextExtensions: { policy: 'egress', service: 'httpbin' },
      method: 'GET',
      path: '/get',
      headers: { 'x-sandbox-id': 'sbx-1', 'x-sandbox-tier': 'admin' },
    });
    expect(noToken).toMatchObject({ allowed: false, status: 401 });
  });

  it('a disabled key is refused while other keys are enabled (defect 4)', async () => {
    const got = await client.check({
      contextExtensions: { policy: 'gateway' },
      method: 'GET',
      path: '/api/v1/status',
      headers: { 'x-api-key': keyOf('retired') },
    });
    expect(got).toMatchObject({ allowed: false, status: 403, body: { error: { code: 'disabled_api_key' } } });
  });

  it('decision logs mask API keys and authorization headers (defect 8)', async () => {
    await client.check({
      contextExtensions: { policy: 'gateway' },
      method: 'GET',
      path: '/api/v1/status',
      headers: { 'x-api-key': keyOf('ci'), authorization: `Bearer ${keyOf('ci')}` },
    });
    await new Promise((r) => setTimeout(r, 500));
    const log = readFileSync(join(opa.dir, 'opa.log'), 'utf8');
    const decisions = log
      .split('\n')
      .filter((l) => l.includes('"Decision Log"') && l.includes('agentd/envoy/authz/result'))
      .map((l) => JSON.parse(l) as { decision_id: string; erased?: string[]; input?: unknown });
    expect(decisions.length).toBeGreaterThan(0);
    const last = decisions.at(-1)!;
    expect(last.decision_id).toMatch(/\w+/);
    expect(last.erased).toEqual(
      expect.arrayContaining(['/input/attributes/request/http/headers/x-api-key', '/input/attributes/request/http/headers/authorization']),
    );
    for (const c of spec.clients) expect(log).not.toContain(keyOf(c.id));
  });
});

describe('the decision cache and the clock', () => {
  // A key in its grace period and a token near its exp: cached answers must end with them.
  let opa: RunningOpa;
  let client: ExtAuthzClient;
  let registry: RegistryServer;
  let endsAt = 0;
  const graceKey = 'test-key-grace-0123456789abcdef';
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agentd-opa-clock-'));
    endsAt = Date.now() + 4000; // OPA starts within a second or two
    const hashes = { ...keyHashes, ci: [{ hash: keyHashes['ci'] as string }, { hash: sha256Hex(graceKey), notAfter: new Date(endsAt).toISOString() }] };
    registry = await new RegistryServer(join(dir, 'registry'), { 'sbx-clock': { tier: 'admin', exp: Math.floor(endsAt / 1000) + 3600 } }).start();
    opa = await startOpa(join(dir, 'opa'), buildBundle(spec, hashes).bytes, { registry: registry.opaInput() });
    client = new ExtAuthzClient(opa.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await opa?.process.stop();
    await registry?.close();
  });

  it("a key's grace period and a token's exp end cached answers on time", async () => {
    const gateway = () => client.check({ contextExtensions: { policy: 'gateway' }, method: 'GET', path: '/api/v1/status', headers: { 'x-api-key': graceKey } });
    const service = Object.keys(spec.egressServices)[0]!;
    const s = spec.egressServices[service]!;
    const exp = Math.floor(endsAt / 1000);
    const egress = () =>
      client.check({
        contextExtensions: { policy: 'egress', service },
        method: s.allowedMethods[0]!,
        path: instantiate(s.allowedPaths[0]!),
        host: service,
        jwtClaims: { iss: 'agentd', aud: 'agentd-egress', sub: 'sbx-clock', tier: 'admin', exp },
      });
    const before = await cacheLookups(opa);
    for (let i = 0; i < 3; i++) {
      const g = await gateway();
      expect(g.allowed, JSON.stringify(g.body)).toBe(true);
      const e = await egress();
      expect(e.allowed, JSON.stringify(e.body)).toBe(true);
    }
    const during = await cacheLookups(opa);
    expect((during['hit'] ?? 0) - (before['hit'] ?? 0), 'answers reused while valid').toBe(4);
    await sleep(Math.max(exp * 1000, endsAt) - Date.now() + 100);
    expect(await gateway()).toMatchObject({ allowed: false, status: 401, body: { error: { code: 'expired_api_key' } } });
    expect(await egress()).toMatchObject({ allowed: false, status: 401, body: { error: { code: 'token_expired' } } });
  });
});

describe('OPA whose sandbox registry fails (fail closed)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-opa-noregistry-'));
  const cleanup: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const f of cleanup.reverse()) await f();
  });
  const sbx = { sub: 'sbx-a', tier: 'standard', exp: Math.floor(Date.now() / 1000) + 600, iss: 'agentd', aud: 'agentd-egress' };
  const s = spec.egressServices['openai']!;
  const call = (c: ExtAuthzClient) =>
    c.check({
      contextExtensions: { policy: 'egress', service: 'openai' },
      method: 'POST',
      path: instantiate(s.allowedPaths[0]!),
      host: 'openai',
      jwtClaims: sbx,
    });
  const gatewayCall = (c: ExtAuthzClient) =>
    c.check({ contextExtensions: { policy: 'gateway' }, method: 'GET', path: '/api/v1/status', headers: { 'x-api-key': keyOf('admin') } });
  const healthStatus = async (opa: RunningOpa) => (await fetch(`http://127.0.0.1:${opa.httpPort}/health?bundles`)).status;

  it('unreachable at start: OPA stays unready, refuses egress with 503 sandbox_registry_unavailable, still serves the gateway, and recovers when agentd answers', async () => {
    const registryPort = await freePort();
    const registry = new RegistryServer(join(dir, 'registry'), { 'sbx-a': { tier: 'standard', exp: sbx.exp } });
    cleanup.push(() => registry.close());
    const opa = await startOpa(join(dir, 'unreachable'), bundle.bytes, {
      registry: { url: `http://127.0.0.1:${registryPort}`, tokenFile: registry.tokenFile },
      readyWhen: 'policy',
    });
    const client = new ExtAuthzClient(opa.grpcPort);
    cleanup.push(async () => {
      client.close();
      await opa.process.stop();
    });
    // A few failed downloads later, still the same answer.
    await sleep(1500);
    expect(opa.process.running).toBe(true);
    expect(await healthStatus(opa)).toBe(500);
    expect(await call(client)).toMatchObject({ allowed: false, status: 503, body: { error: { code: 'sandbox_registry_unavailable' } } });
    expect((await gatewayCall(client)).allowed).toBe(true);

    // agentd comes up: OPA retries (backoff capped at the max polling delay) and admits the sandbox.
    await registry.start(registryPort);
    const t0 = Date.now();
    await waitFor('the registry to be loaded', async () => (await call(client)).allowed, 10_000);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await healthStatus(opa)).toBe(200);
  });

  it('a registry bundle without a manifest (no roots: it would own all of data) is refused by OPA: egress stays closed', async () => {
    // The policy bundle activates first (the registry's first answer waits): otherwise the rootless
    // registry bundle may win the race and knock the policy out instead, which is not this case.
    const registry = await new RegistryServer(
      join(dir, 'registry-nomanifest'),
      { 'sbx-a': { tier: 'standard', exp: sbx.exp } },
      { manifest: false, delayFirstMs: 2000 },
    ).start();
    cleanup.push(() => registry.close());
    const opa = await startOpa(join(dir, 'nomanifest'), bundle.bytes, { registry: registry.opaInput(), readyWhen: 'policy' });
    const client = new ExtAuthzClient(opa.grpcPort);
    cleanup.push(async () => {
      client.close();
      await opa.process.stop();
    });
    await waitFor('OPA to fetch the registry', async () => registry.requests.some((r) => r.status === 200), 8000);
    await sleep(500);
    expect(await call(client)).toMatchObject({ allowed: false, status: 503, body: { error: { code: 'sandbox_registry_unavailable' } } });
    expect((await gatewayCall(client)).allowed).toBe(true);
    expect(await healthStatus(opa)).toBe(500);
  });
});

describe('OPA config (components/render/opa.ts)', () => {
  const grpc = { host: '127.0.0.1', port: 9191 };
  it('with the bundle server: service bundles, the policy bundle polled every second, never persisted, signed with the pinned key', () => {
    const c = renderOpaConfig({ grpc, bundle: { url: 'http://bundles:8380/' } }) as Record<string, any>;
    expect(c['services']).toEqual({ [OPA_POLICY_SERVICE]: { url: 'http://bundles:8380' } });
    expect(c['bundles']).toEqual({
      [OPA_BUNDLE_NAME]: {
        service: OPA_POLICY_SERVICE,
        resource: POLICY_BUNDLE_RESOURCE.slice(1),
        persist: false,
        polling: { min_delay_seconds: 1, max_delay_seconds: 1 },
        signing: { keyid: POLICY_SIGNING_KEY_ID },
      },
    });
    // The key's value comes from its own file on OPA's command line (opaRunArgs).
    expect(c['keys']).toEqual({ [POLICY_SIGNING_KEY_ID]: { algorithm: 'ES256' } });
    const args = opaRunArgs({ apiAddr: '127.0.0.1:8181', configFile: '/c.yaml', verificationKeyFile: '/run/secrets/key.pem' });
    expect(args.slice(args.indexOf('--set-file'), args.indexOf('--set-file') + 2)).toEqual([
      '--set-file',
      `keys.${POLICY_SIGNING_KEY_ID}.key=/run/secrets/key.pem`,
    ]);
  });

  it('without a registry: the file bundle only, no service (nothing is downloaded)', () => {
    const c = renderOpaConfig({ grpc, bundle: { file: '/etc/opa/agentd-bundle.tar.gz' } }) as Record<string, any>;
    expect(c['services']).toBeUndefined();
    expect(c['bundles']).toEqual({ [OPA_BUNDLE_NAME]: { resource: 'file:///etc/opa/agentd-bundle.tar.gz' } });
    expect(c['keys']).toBeUndefined();
  });

  it('with a registry: service agentd with a bearer token file, bundle `sandboxes` long-polled, never persisted', () => {
    const c = renderOpaConfig({
      grpc,
      bundle: { file: '/b.tar.gz' },
      registry: { url: 'http://agentd:8090/', tokenFile: '/run/secrets/registry-token' },
    }) as Record<string, any>;
    expect(c['services']).toEqual({
      [OPA_REGISTRY_SERVICE]: { url: 'http://agentd:8090', credentials: { bearer: { token_path: '/run/secrets/registry-token' } } },
    });
    expect(c['bundles'][OPA_BUNDLE_NAME]).toEqual({ resource: 'file:///b.tar.gz' });
    expect(c['bundles'][OPA_REGISTRY_BUNDLE_NAME]).toEqual({
      service: OPA_REGISTRY_SERVICE,
      resource: REGISTRY_BUNDLE_PATH.slice(1),
      persist: false,
      polling: { min_delay_seconds: 1, max_delay_seconds: 1, long_polling_timeout_seconds: 10 },
    });
    expect(REGISTRY_BUNDLE_PATH.startsWith('/')).toBe(true);
    expect(c['bundles'][OPA_REGISTRY_BUNDLE_NAME].resource.startsWith('/')).toBe(false);
    // With a service configured, OPA would upload decision logs and status to it unless they go elsewhere.
    expect(c['decision_logs'].console).toBe(true);
    expect(c['status'].prometheus).toBe(true);
    const custom = renderOpaConfig({
      grpc,
      bundle: { file: '/b.tar.gz' },
      registry: { url: 'http://agentd:8090', tokenFile: '/t', longPollingTimeoutSeconds: 3 },
    }) as Record<string, any>;
    expect(custom['bundles'][OPA_REGISTRY_BUNDLE_NAME].polling.long_polling_timeout_seconds).toBe(3);
  });
});

describe('the bundle', () => {
  it('is byte-identical for identical input, with a content-hash revision', () => {
    const again = buildBundle(shippedSpec(), keyHashes);
    expect(again.bytes.equals(bundle.bytes)).toBe(true);
    expect(again.revision).toBe(bundle.revision);
    const other = buildBundle(spec, { ...keyHashes, ci: sha256Hex('another') });
    expect(other.revision).not.toBe(bundle.revision);
  });

  it('holds data.json at its package path, inside the declared roots (defect 2)', () => {
    const tar = gunzipSync(bundle.bytes);
    const names: string[] = [];
    for (let off = 0; off + 512 <= tar.length; ) {
      const name = tar
        .subarray(off, off + 100)
        .toString('utf8')
        .replace(/\0.*$/s, '');
      if (!name) break;
      names.push(name);
      const size = parseInt(tar.subarray(off + 124, off + 136).toString('utf8'), 8);
      off += 512 + Math.ceil(size / 512) * 512;
    }
    expect(names).toContain(BUNDLE_DATA_PATH);
    expect(names.filter((n) => n.endsWith('.json') && n !== '.manifest').every((n) => n.endsWith('/data.json'))).toBe(true);
    const manifest = JSON.parse(bundle.files['.manifest']!) as { roots: string[]; revision: string };
    expect(names.filter((n) => n !== '.manifest').every((n) => manifest.roots.some((r) => n.startsWith(`${r}/`)))).toBe(true);
    expect(manifest.revision).toBe(bundle.revision);
  });

  it("owns data.agentd only: its roots never overlap the sandbox registry (agentd's bundle at data.sandboxes)", () => {
    const manifest = JSON.parse(bundle.files['.manifest']!) as { roots: string[] };
    expect(manifest.roots).toEqual(['agentd']);
    expect(manifest.roots).toEqual([...BUNDLE_ROOTS]);
    expect(manifest.roots.filter((r) => rootsOverlap(r, REGISTRY_BUNDLE_ROOT))).toEqual([]);
    expect(rootsOverlap('agentd', 'agentd/config')).toBe(true);
    expect(rootsOverlap('', 'sandboxes')).toBe(true);
    expect(rootsOverlap('sandboxes', 'sandboxes2')).toBe(false);
  });

  it("carries each role's scope and sandbox tiers, and the identity header names of agentd's contract", () => {
    const data = JSON.parse(bundle.files[BUNDLE_DATA_PATH]!) as {
      gateway: { roles: Record<string, { scope: string; sandbox_tiers: string[] }>; identity_headers: Record<string, string> };
    };
    expect(Object.keys(data.gateway.roles).length).toBe(Object.keys(spec.roles).length);
    for (const [id, role] of Object.entries(spec.roles)) {
      expect(data.gateway.roles[id]).toMatchObject({ scope: role.scope, sandbox_tiers: [...role.sandboxTiers] });
    }
    expect(data.gateway.identity_headers).toEqual({
      client_id: IDENTITY_HEADERS.clientId,
      client_role: IDENTITY_HEADERS.clientRole,
      client_scope: IDENTITY_HEADERS.clientScope,
      sandbox_tiers: IDENTITY_HEADERS.sandboxTiers,
    });
  });

  it('holds key hashes, never keys (security model)', () => {
    const data = bundle.files[BUNDLE_DATA_PATH]!;
    for (const c of spec.clients) {
      expect(data).not.toContain(keyOf(c.id));
      expect(data).toContain(keyHashes[c.id]!);
    }
  });
});
