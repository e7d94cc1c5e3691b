// Caller identity, tenant isolation and tier ceilings, over real HTTP and gRPC:
//   - production: every API request needs the gateway token and a client id (401 /
//     UNAUTHENTICATED otherwise, saying nothing more); /health and /ready stay open;
//   - development: without identity headers the caller is a local admin; with them, they count;
//   - scope 'own' sees and acts on its own sandboxes only: another client's sandbox is exactly
//     as absent as one that does not exist; scope 'all' sees everything;
//   - a role creates only the tiers it is granted (403 tier_not_allowed), and a client has at
//     most AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT active sandboxes (429 too_many_sandboxes).
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GATEWAY_TOKEN_HEADER, GRPC_ERROR_CODE_METADATA, IDENTITY_HEADERS } from '../../agentd/src/contract.ts';
import {
  apiClient,
  cleanupAll,
  grpcClient,
  identity,
  rejection,
  startEgress,
  startInProcess,
  tempDir,
  writeSecret,
  type ApiClient,
  type GrpcClient,
  type InProcess,
  type StandInEgress,
} from './support.ts';

afterAll(cleanupAll);

const NO_SUCH = 'sbx_000000000000000000000000';
const GATEWAY_TOKEN = 'gw-0123456789abcdef0123456789abcdef';
const fetchBody = { capability: 'http_fetch', params: { service: 'openai', method: 'GET', path: '/v1/models' } };

let egress: StandInEgress;
beforeAll(async () => {
  egress = await startEgress();
});

function expectError(r: { status: number; json: any; headers: Headers }, status: number, code: string) {
  expect(r.status).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  expect(r.json.error.code).toBe(code);
  expect(typeof r.json.error.message).toBe('string');
}

function expectGrpc(err: grpc.ServiceError, code: grpc.status, errorCode: string) {
  expect(grpc.status[err.code]).toBe(grpc.status[code]);
  expect(err.metadata.get(GRPC_ERROR_CODE_METADATA)[0]).toBe(errorCode);
}

describe('production: the gateway token and a client id are required', () => {
  let d: InProcess;
  let c: GrpcClient;
  const ok = identity({ clientId: 'client-a', role: 'operator', scope: 'own', tiers: ['default'], gatewayToken: GATEWAY_TOKEN });

  beforeAll(async () => {
    const dir = tempDir();
    d = await startInProcess({
      AGENTD_MODE: 'production',
      AGENTD_EGRESS_URL: egress.url,
      AGENTD_DATA_DIR: path.join(dir, 'data'),
      AGENTD_GATEWAY_TOKEN_FILE: writeSecret(dir, 'gateway-token', GATEWAY_TOKEN),
      AGENTD_REGISTRY_TOKEN_FILE: writeSecret(dir, 'registry-token', 'registry-0123456789abcdef'),
    });
    c = grpcClient(d.agentd.grpc.address);
  });

  it('HTTP: no token, a wrong token, or no client id: the same 401, saying nothing more', async () => {
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, ok);
    expect(s.status).toBe(201);
    expect(s.json.owner).toBe('client-a');

    const { [GATEWAY_TOKEN_HEADER]: _t, ...noToken } = ok;
    const { [IDENTITY_HEADERS.clientId]: _c, ...noClient } = ok;
    const attempts: [string, string, Record<string, string>][] = [
      ['GET', '/api/v1/status', {}],
      ['GET', '/api/v1/status', noToken],
      ['GET', '/api/v1/status', { ...ok, [GATEWAY_TOKEN_HEADER]: `${GATEWAY_TOKEN}x` }],
      ['GET', '/api/v1/status', { ...ok, [GATEWAY_TOKEN_HEADER]: GATEWAY_TOKEN.slice(0, -1) }],
      ['GET', '/api/v1/status', noClient],
      ['GET', '/api/v1/status', { ...ok, [IDENTITY_HEADERS.clientId]: '' }],
      ['GET', '/api/v1/status', { ...ok, [IDENTITY_HEADERS.clientScope]: 'everything' }],
      ['GET', '/api/v1/status', { ...ok, [IDENTITY_HEADERS.clientId]: 'bad id' }],
      ['GET', `/api/v1/sandboxes/${s.json.id}`, noToken],
      ['GET', `/api/v1/sandboxes/${NO_SUCH}`, noToken],
      ['DELETE', `/api/v1/sandboxes/${s.json.id}`, noToken],
      ['POST', '/api/v1/sandboxes', noToken],
      ['GET', '/api/v1/no-such-route', noToken],
      ['GET', '/api/v1/sandboxes?limit=nope', noToken],
    ];
    const bodies = new Set<string>();
    for (const [method, p, headers] of attempts) {
      const r = await d.api(method, p, method === 'POST' ? { tier: 'default' } : undefined, headers);
      expect(r.status, `${method} ${p} ${JSON.stringify(Object.keys(headers))}`).toBe(401);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      bodies.add(r.text);
    }
    expect([...bodies]).toEqual(['{"error":{"code":"unauthenticated","message":"authentication required"}}']);
    // Nothing was terminated or created by the refused requests.
    const list = await d.api('GET', '/api/v1/sandboxes', undefined, ok);
    expect(list.json.sandboxes.map((x: any) => [x.id, x.state])).toEqual([[s.json.id, 'active']]);
    // Unknown API routes need the token too; with it they are a plain 404.
    expectError(await d.api('GET', '/api/v1/no-such-route', undefined, ok), 404, 'not_found');
    // The secret never reaches the logs.
    expect(d.logs.length).toBeGreaterThan(10);
    for (const line of d.logs) expect(line).not.toContain(GATEWAY_TOKEN.slice(3));
  });

  it('HTTP: /health, /ready and /openapi.json are open', async () => {
    expect((await d.api('GET', '/health')).status).toBe(200);
    expect((await d.api('GET', '/ready')).json).toEqual({ status: 'ready', checks: { storage: true, draining: false } });
    expect((await d.api('GET', '/openapi.json')).status).toBe(200);
  });

  it('there is no local admin in production: a missing scope is "own", missing tiers are none', async () => {
    const minimal = { [GATEWAY_TOKEN_HEADER]: GATEWAY_TOKEN, [IDENTITY_HEADERS.clientId]: 'client-min' };
    const st = await d.api('GET', '/api/v1/status', undefined, minimal);
    expect(st.status).toBe(200);
    expect(st.json.egress_url).toBeUndefined();
    expect(st.json.sandboxes.total).toBe(0);
    const r = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, minimal);
    expectError(r, 403, 'tier_not_allowed');
    expect(r.json.error.message).toBe('client "client-min" may not create "default" sandboxes; allowed: none');
  });

  it('gRPC: every agentd.v1.Agentd method is UNAUTHENTICATED without the token; health checking is open', async () => {
    const { [GATEWAY_TOKEN_HEADER]: _t, ...noToken } = ok;
    const calls: [string, object][] = [
      ['Health', {}],
      ['Status', {}],
      ['CreateSandbox', { tier: 'default' }],
      ['ListSandboxes', {}],
      ['GetSandbox', { id: NO_SUCH }],
      ['TerminateSandbox', { id: NO_SUCH }],
      ['ExecuteIntent', { sandbox_id: NO_SUCH, capability: 'http_fetch', http_fetch: fetchBody.params }],
      ['ListIntents', { sandbox_id: NO_SUCH }],
    ];
    expect(calls).toHaveLength(8);
    for (const [method, req] of calls) {
      for (const md of [{}, noToken, { ...ok, [GATEWAY_TOKEN_HEADER]: 'wrong-token-0123456789' }]) {
        const err = await rejection(c.call(method, req, md));
        expectGrpc(err, grpc.status.UNAUTHENTICATED, 'unauthenticated');
        expect(err.details).toBe('authentication required');
      }
    }
    expect(await c.call('Health', {}, ok)).toEqual({ status: 'ok', ready: true });
    const created = await c.call('CreateSandbox', { tier: 'default' }, ok);
    expect(created.sandbox.owner).toBe('client-a');
    const check = await new Promise<any>((resolve, reject) => c.health.Check({ service: '' }, (e: Error | null, r: any) => (e ? reject(e) : resolve(r))));
    expect(check).toEqual({ status: 'SERVING' });
  });
});

describe('development: local admin without headers, the headers when present', () => {
  let d: InProcess;
  beforeAll(async () => {
    d = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
  });

  it('no identity headers: a local admin (scope all, every tier)', async () => {
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'admin' });
    expect(s.status).toBe(201);
    expect(s.json.owner).toBe('local-admin');
    const st = await d.api('GET', '/api/v1/status');
    expect(st.json.token_kid).toBe('test-key-1');
  });

  it('identity headers are used when present (and malformed ones refused)', async () => {
    const h = identity({ clientId: 'dev-client', role: 'viewer', scope: 'own', tiers: ['restricted'] });
    const s = await d.api('POST', '/api/v1/sandboxes', { tier: 'restricted' }, h);
    expect(s.status).toBe(201);
    expect(s.json.owner).toBe('dev-client');
    expectError(await d.api('POST', '/api/v1/sandboxes', { tier: 'admin' }, h), 403, 'tier_not_allowed');
    const list = await d.api('GET', '/api/v1/sandboxes', undefined, h);
    expect(list.json.sandboxes.map((x: any) => x.id)).toEqual([s.json.id]);
    expectError(await d.api('GET', '/api/v1/status', undefined, { ...h, [IDENTITY_HEADERS.clientScope]: 'root' }), 401, 'unauthenticated');
  });
});

describe('tenant isolation', () => {
  let d: InProcess;
  let alice: ApiClient;
  let bob: ApiClient;
  let admin: ApiClient;
  let g: GrpcClient;
  const aliceId = identity({ clientId: 'alice', role: 'operator', scope: 'own' });
  const bobId = identity({ clientId: 'bob', role: 'operator', scope: 'own' });
  const adminId = identity({ clientId: 'root', role: 'admin', scope: 'all' });

  beforeAll(async () => {
    d = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
    alice = apiClient(d.agentd.http.url, aliceId);
    bob = apiClient(d.agentd.http.url, bobId);
    admin = apiClient(d.agentd.http.url, adminId);
    g = grpcClient(d.agentd.grpc.address);
  });

  it("HTTP: another client's sandbox is exactly as absent as a nonexistent one", async () => {
    const a = (await alice('POST', '/api/v1/sandboxes', { tier: 'default', labels: { who: 'alice' } })).json;
    expect(a.owner).toBe('alice');
    expect((await alice('POST', `/api/v1/sandboxes/${a.id}/intents`, fetchBody)).status).toBe(200);
    const sentBefore = egress.requests.length;

    const probes: [string, string, unknown][] = [
      ['GET', '', undefined],
      ['DELETE', '', undefined],
      ['POST', '/intents', fetchBody],
      ['GET', '/intents', undefined],
    ];
    for (const [method, suffix, body] of probes) {
      const theirs = await bob(method, `/api/v1/sandboxes/${a.id}${suffix}`, body);
      const none = await bob(method, `/api/v1/sandboxes/${NO_SUCH}${suffix}`, body);
      expect(theirs.status, `${method} ${suffix}`).toBe(404);
      expect(theirs.json).toEqual({ error: { code: 'sandbox_not_found', message: `sandbox ${a.id} not found` } });
      expect(none.json).toEqual({ error: { code: 'sandbox_not_found', message: `sandbox ${NO_SUCH} not found` } });
      expect(theirs.headers.get('content-type')).toBe(none.headers.get('content-type'));
    }
    // Nothing happened to alice's sandbox, nothing went out.
    expect(egress.requests.length).toBe(sentBefore);
    expect((await alice('GET', `/api/v1/sandboxes/${a.id}`)).json.state).toBe('active');
    expect((await alice('GET', `/api/v1/sandboxes/${a.id}/intents`)).json.intents).toHaveLength(1);
  });

  it('HTTP: lists and status are per client for scope own; scope all sees and acts on everything', async () => {
    const a1 = (await alice('POST', '/api/v1/sandboxes', { tier: 'standard' })).json;
    const b1 = (await bob('POST', '/api/v1/sandboxes', { tier: 'standard' })).json;
    const aliceList = (await alice('GET', '/api/v1/sandboxes?limit=1000')).json.sandboxes.map((s: any) => s.owner);
    const bobList = (await bob('GET', '/api/v1/sandboxes?limit=1000')).json.sandboxes.map((s: any) => s.id);
    expect(aliceList.length).toBeGreaterThanOrEqual(2);
    expect(new Set(aliceList)).toEqual(new Set(['alice']));
    expect(bobList).toEqual([b1.id]);

    const all = (await admin('GET', '/api/v1/sandboxes?limit=1000')).json.sandboxes.map((s: any) => s.id);
    expect(all).toEqual(expect.arrayContaining([a1.id, b1.id]));

    const bobStatus = (await bob('GET', '/api/v1/status')).json;
    expect(bobStatus.sandboxes).toEqual({ total: 1, active: 1, expired: 0, terminated: 0 });
    expect(bobStatus.intents).toEqual({ total: 0, running: 0, in_flight: 0 });
    expect(bobStatus.egress_url).toBeUndefined();
    expect(bobStatus.token_kid).toBeUndefined();
    const aliceStatus = (await alice('GET', '/api/v1/status')).json;
    expect(aliceStatus.intents.total).toBe(1);
    const adminStatus = (await admin('GET', '/api/v1/status')).json;
    expect(adminStatus.sandboxes.total).toBe(aliceStatus.sandboxes.total + bobStatus.sandboxes.total);
    expect(adminStatus.egress_url).toBe(egress.url);
    expect(adminStatus.token_kid).toBe('test-key-1');

    // Scope all acts on other clients' sandboxes.
    expect((await admin('GET', `/api/v1/sandboxes/${b1.id}`)).json.owner).toBe('bob');
    expect((await admin('POST', `/api/v1/sandboxes/${b1.id}/intents`, fetchBody)).status).toBe(200);
    expect((await admin('GET', `/api/v1/sandboxes/${b1.id}/intents`)).json.intents).toHaveLength(1);
    const t = await admin('DELETE', `/api/v1/sandboxes/${b1.id}`);
    expect(t.status).toBe(200);
    expect(t.json).toMatchObject({ id: b1.id, owner: 'bob', state: 'terminated' });
  });

  it("gRPC: the same isolation (NOT_FOUND for another client's sandbox), lists and status", async () => {
    const a = (await g.call('CreateSandbox', { tier: 'premium' }, aliceId)).sandbox;
    expect(a.owner).toBe('alice');
    const calls: [string, object][] = [
      ['GetSandbox', { id: a.id }],
      ['TerminateSandbox', { id: a.id }],
      ['ExecuteIntent', { sandbox_id: a.id, capability: 'http_fetch', http_fetch: fetchBody.params }],
      ['ListIntents', { sandbox_id: a.id }],
    ];
    expect(calls).toHaveLength(4);
    for (const [method, req] of calls) {
      const err = await rejection(g.call(method, req, bobId));
      expectGrpc(err, grpc.status.NOT_FOUND, 'sandbox_not_found');
      expect(err.details).toBe(`sandbox ${a.id} not found`);
    }
    expect((await g.call('GetSandbox', { id: a.id }, aliceId)).sandbox.state).toBe('active');
    const bobs = await g.call('ListSandboxes', { limit: 1000 }, bobId);
    expect(bobs.sandboxes.every((s: any) => s.owner === 'bob')).toBe(true);
    expect(bobs.sandboxes.map((s: any) => s.id)).not.toContain(a.id);
    const all = await g.call('ListSandboxes', { limit: 1000 }, adminId);
    expect(all.sandboxes.map((s: any) => s.id)).toContain(a.id);

    const st = await g.call('Status', {}, bobId);
    expect(st.egress_url).toBeUndefined();
    expect(st.token_kid).toBeUndefined();
    expect(Number(st.sandboxes.total)).toBe(1);
    const adminSt = await g.call('Status', {}, adminId);
    expect(adminSt.token_kid).toBe('test-key-1');
    expect(adminSt.egress_url).toBe(egress.url);
  });
});

describe('tier ceilings and the per-client limit', () => {
  let d: InProcess;
  let g: GrpcClient;
  beforeAll(async () => {
    d = await startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT: '2' });
    g = grpcClient(d.agentd.grpc.address);
  });

  it('HTTP: 403 tier_not_allowed naming the role, the tier and the allowed tiers; unknown tiers stay 400', async () => {
    const op = identity({ clientId: 'ops-1', role: 'operator', scope: 'own', tiers: ['standard', 'default'] });
    const r = await d.api('POST', '/api/v1/sandboxes', { tier: 'admin' }, op);
    expectError(r, 403, 'tier_not_allowed');
    expect(r.json).toEqual({ error: { code: 'tier_not_allowed', message: 'role "operator" may not create "admin" sandboxes; allowed: default, standard' } });
    expectError(await d.api('POST', '/api/v1/sandboxes', { tier: 'gold' }, op), 400, 'invalid_argument');
    const none = identity({ clientId: 'viewer-1', role: 'viewer', scope: 'own', tiers: [] });
    const rn = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, none);
    expect(rn.json.error.message).toBe('role "viewer" may not create "default" sandboxes; allowed: none');
    expect((await d.api('GET', '/api/v1/sandboxes', undefined, { ...op, [IDENTITY_HEADERS.clientScope]: 'all' })).json.sandboxes).toEqual([]);
  });

  it('gRPC: PERMISSION_DENIED with the same code', async () => {
    const op = identity({ clientId: 'ops-2', role: 'operator', scope: 'own', tiers: ['default'] });
    const err = await rejection(g.call('CreateSandbox', { tier: 'premium' }, op));
    expectGrpc(err, grpc.status.PERMISSION_DENIED, 'tier_not_allowed');
    expect(err.details).toBe('role "operator" may not create "premium" sandboxes; allowed: default');
  });

  it('at most AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT active sandboxes per client: 429 / RESOURCE_EXHAUSTED', async () => {
    const c1 = identity({ clientId: 'busy', scope: 'own' });
    const c2 = identity({ clientId: 'other', scope: 'own' });
    const first = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, c1);
    expect(first.status).toBe(201);
    expect((await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, c1)).status).toBe(201);
    const over = await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, c1);
    expectError(over, 429, 'too_many_sandboxes');
    expect(over.json.error.message).toContain('(2)');
    expectGrpc(await rejection(g.call('CreateSandbox', { tier: 'default' }, c1)), grpc.status.RESOURCE_EXHAUSTED, 'too_many_sandboxes');
    // Other clients are not affected; terminating frees a slot.
    expect((await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, c2)).status).toBe(201);
    expect((await d.api('DELETE', `/api/v1/sandboxes/${first.json.id}`, undefined, c1)).status).toBe(200);
    expect((await d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, c1)).status).toBe(201);
  });

  it('concurrent creates cannot overshoot the limit', async () => {
    const c3 = identity({ clientId: 'racer', scope: 'own' });
    const results = await Promise.all(Array.from({ length: 6 }, () => d.api('POST', '/api/v1/sandboxes', { tier: 'default' }, c3)));
    expect(results).toHaveLength(6);
    expect(results.map((r) => r.status).sort()).toEqual([201, 201, 429, 429, 429, 429]);
    const st = await d.api('GET', '/api/v1/status', undefined, c3);
    expect(st.json.sandboxes.active).toBe(2);
  });
});
