// The policy proven against the real OPA with the Envoy ext_authz plugin: `opa test` with
// coverage, then decision tables generated from the data sent as ext_authz v3 gRPC Check calls
// to OPA serving the built bundle, each answer compared with an independent oracle.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { buildBundle, sha256Hex, BUNDLE_DATA_PATH } from '../../policy/bundle.ts';
import { ExtAuthzClient, startOpa, type RunningOpa } from '../harness/opa.ts';
import { REPO_ROOT, run, toolPath } from '../support/tools.ts';
import { shippedSpec } from '../support/fixtures.ts';
import { egressPaths, expectEgress, expectGateway, gatewayRoutes, METHODS } from './oracle.ts';

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
  beforeAll(async () => {
    opa = await startOpa(mkdtempSync(join(tmpdir(), 'agentd-opa-')), bundle.bytes);
    client = new ExtAuthzClient(opa.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await opa?.process.stop();
  });

  it('loads the bundle: data at data.agentd.config, the revision from the manifest (defect 2)', async () => {
    const res = await fetch(`http://127.0.0.1:${opa.httpPort}/v1/data/agentd/config/gateway/roles`);
    const roles = (await res.json()) as { result?: Record<string, unknown> };
    expect(Object.keys(roles.result ?? {}).sort()).toEqual(Object.keys(spec.roles).sort());
    const status = await fetch(`http://127.0.0.1:${opa.httpPort}/v1/data/system/bundles`).catch(() => undefined);
    expect(status).toBeDefined();
    const metrics = await (await fetch(`http://127.0.0.1:${opa.httpPort}/metrics`)).text();
    expect(metrics).toContain(bundle.revision);
  });

  it('gateway: every client x route x method gets the right answer', async () => {
    const cases = spec.clients.flatMap((c) => gatewayRoutes(spec).flatMap((path) => METHODS.map((method) => ({ c, path, method }))));
    const unknown = gatewayRoutes(spec).map((path) => ({ c: { id: 'nobody' }, path, method: 'GET' }));
    const all = [...cases, ...unknown];
    const wrong: string[] = [];
    for (let i = 0; i < all.length; i += 50) {
      await Promise.all(all.slice(i, i + 50).map(async ({ c, path, method }) => {
        const want = expectGateway(spec, c.id, method, path);
        const got = await client.check({ contextExtensions: { policy: 'gateway' }, method, path, headers: { 'x-api-key': keyOf(c.id) } });
        if (got.allowed !== want.allowed || (!want.allowed && (got.status !== want.status || got.body?.error?.code !== want.reason))) {
          wrong.push(`${c.id} ${method} ${path}: want ${JSON.stringify(want)}, got ${got.allowed} ${got.status} ${got.body?.error?.code}`);
        }
        if (got.allowed) expect(got.dynamicMetadata).toMatchObject({ client_id: c.id, tier: spec.clients.find((x) => x.id === c.id)?.rateLimitTier });
      }));
    }
    expect(all.length).toBeGreaterThan(300);
    expect(wrong).toEqual([]);
  });

  it('egress: every sandbox tier x service x method x allowed and denied path gets the right answer', async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const all = Object.keys(spec.sandboxTiers).flatMap((tier) =>
      Object.keys(spec.egressServices).flatMap((service) =>
        egressPaths(spec, service).flatMap((path) => METHODS.map((method) => ({ tier, service, path, method })))));
    const wrong: string[] = [];
    for (let i = 0; i < all.length; i += 50) {
      await Promise.all(all.slice(i, i + 50).map(async ({ tier, service, path, method }) => {
        const want = expectEgress(spec, tier, service, method, path);
        const got = await client.check({ contextExtensions: { policy: 'egress', service }, method, path, host: service, jwtClaims: { sub: 'sbx-1', tier, exp, iss: 'agentd', aud: 'agentd-egress' } });
        if (got.allowed !== want.allowed || (!want.allowed && (got.status !== want.status || got.body?.error?.code !== want.reason))) {
          wrong.push(`${tier} ${service} ${method} ${path}: want ${JSON.stringify(want)}, got ${got.allowed} ${got.status} ${got.body?.error?.code}`);
        }
        if (got.allowed) expect(got.dynamicMetadata).toMatchObject({ sandbox_id: 'sbx-1', tier, service });
      }));
    }
    expect(all.length).toBeGreaterThan(1000);
    expect(all.filter((c) => expectEgress(spec, c.tier, c.service, c.method, c.path).allowed).length).toBeGreaterThan(50);
    expect(wrong).toEqual([]);
  });

  it('answers with `allowed`, as the Envoy plugin expects (defect 1)', async () => {
    const got = await client.check({ contextExtensions: { policy: 'gateway' }, method: 'GET', path: '/api/v1/status', headers: { 'x-api-key': keyOf('admin') } });
    expect(got.allowed).toBe(true);
    expect(got.headers['x-agentd-client-id']).toBe('admin');
    expect(got.headersToRemove).toContain('x-api-key');
    // Like the upstream plugin, the decision id travels to Envoy's access log as metadata.
    expect(got.dynamicMetadata['decision_id']).toMatch(/\w{8,}/);
  });

  it('no caller header selects the policy, the tier or the identity (defect 3)', async () => {
    const forged = { 'x-policy': 'gateway', 'x-agentd-policy': 'gateway', 'x-sandbox-tier': 'admin', 'x-agentd-client-id': 'admin', 'x-api-key': keyOf('dashboard') };
    const noContext = await client.check({ method: 'GET', path: '/api/v1/status', headers: forged });
    expect(noContext).toMatchObject({ allowed: false, status: 403, body: { error: { code: 'unknown_policy' } } });
    const asDashboard = await client.check({ contextExtensions: { policy: 'gateway' }, method: 'DELETE', path: '/api/v1/sandboxes/x1', headers: forged });
    expect(asDashboard.body?.error?.code).toBe('method_not_allowed');
    const egress = await client.check({
      contextExtensions: { policy: 'egress', service: 'slack' }, method: 'POST', path: '/api/chat.postMessage',
      headers: { 'x-sandbox-tier': 'admin', 'x-sandbox-id': 'other' }, jwtClaims: { sub: 'sbx-1', tier: 'standard', exp: Math.floor(Date.now() / 1000) + 60 },
    });
    expect(egress.body?.error?.code).toBe('service_not_allowed');
    const noToken = await client.check({ contextExtensions: { policy: 'egress', service: 'httpbin' }, method: 'GET', path: '/get', headers: { 'x-sandbox-id': 'sbx-1', 'x-sandbox-tier': 'admin' } });
    expect(noToken).toMatchObject({ allowed: false, status: 401 });
  });

  it('a disabled key is refused while other keys are enabled (defect 4)', async () => {
    const got = await client.check({ contextExtensions: { policy: 'gateway' }, method: 'GET', path: '/api/v1/status', headers: { 'x-api-key': keyOf('retired') } });
    expect(got).toMatchObject({ allowed: false, status: 403, body: { error: { code: 'disabled_api_key' } } });
  });

  it('decision logs mask API keys and authorization headers (defect 8)', async () => {
    await client.check({ contextExtensions: { policy: 'gateway' }, method: 'GET', path: '/api/v1/status', headers: { 'x-api-key': keyOf('ci'), authorization: `Bearer ${keyOf('ci')}` } });
    await new Promise((r) => setTimeout(r, 500));
    const log = readFileSync(join(opa.dir, 'opa.log'), 'utf8');
    const decisions = log.split('\n').filter((l) => l.includes('"Decision Log"') && l.includes('agentd/envoy/authz/result')).map((l) => JSON.parse(l) as { decision_id: string; erased?: string[]; input?: unknown });
    expect(decisions.length).toBeGreaterThan(0);
    const last = decisions.at(-1)!;
    expect(last.decision_id).toMatch(/\w+/);
    expect(last.erased).toEqual(expect.arrayContaining(['/input/attributes/request/http/headers/x-api-key', '/input/attributes/request/http/headers/authorization']));
    for (const c of spec.clients) expect(log).not.toContain(keyOf(c.id));
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
      const name = tar.subarray(off, off + 100).toString('utf8').replace(/\0.*$/s, '');
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

  it('holds key hashes, never keys (security model)', () => {
    const data = bundle.files[BUNDLE_DATA_PATH]!;
    for (const c of spec.clients) {
      expect(data).not.toContain(keyOf(c.id));
      expect(data).toContain(keyHashes[c.id]!);
    }
  });
});
