// The gRPC API over a real gRPC connection: every RPC's happy path, INVALID_ARGUMENT naming the
// field, NOT_FOUND, FAILED_PRECONDITION; grpc.health.v1 Check and Watch; server reflection.
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRPC_ERROR_CODE_METADATA, GRPC_ERROR_FIELD_METADATA, GRPC_INTENT_ID_METADATA, GRPC_SERVICE, SANDBOX_TOKEN_HEADER } from '../../agentd/src/contract.ts';
import { verifySandboxToken } from '../../agentd/src/core/tokens.ts';
import {
  cleanupAll,
  deadPort,
  grpcClient,
  metricsText,
  rejection,
  startEgress,
  startInProcess,
  type GrpcClient,
  type InProcess,
  type StandInEgress,
} from './support.ts';

let d: InProcess;
let egress: StandInEgress;
let c: GrpcClient;
const NO_SUCH = 'sbx_000000000000000000000000';

beforeAll(async () => {
  egress = await startEgress((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-from': 'egress' });
    res.end('hello');
  });
  d = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
  c = grpcClient(d.agentd.grpc.address);
});
afterAll(cleanupAll);

function expectStatus(err: grpc.ServiceError, code: grpc.status, errorCode: string, field?: string) {
  expect(grpc.status[err.code]).toBe(grpc.status[code]);
  expect(err.metadata.get(GRPC_ERROR_CODE_METADATA)[0]).toBe(errorCode);
  if (field !== undefined) {
    expect(err.details).toContain(field);
    expect(err.metadata.get(GRPC_ERROR_FIELD_METADATA)[0]).toBe(field);
  }
}

describe('agentd.v1.Agentd', () => {
  it('Health and Status', async () => {
    expect(await c.call('Health', {})).toEqual({ status: 'ok', ready: true });
    await c.call('CreateSandbox', { tier: 'default' });
    const s = await c.call('Status', {});
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(s.uptime_seconds).toBeGreaterThanOrEqual(0);
    expect(s.sandboxes.total).toBeGreaterThanOrEqual(1);
    expect(s.sandboxes.active).toBeGreaterThanOrEqual(1);
    // The local development admin has scope 'all': the deployment details are there.
    expect(s.token_kid).toBe('test-key-1');
    expect(s.egress_url).toBe(egress.url);
  });

  it('CreateSandbox returns the sandbox and a token naming it', async () => {
    const r = await c.call('CreateSandbox', { tier: 'premium', labels: { team: 'x' }, ttl_seconds: 90 });
    expect(r.sandbox).toMatchObject({ tier: 'premium', labels: { team: 'x' }, state: 'active', owner: 'local-admin' });
    expect(r.sandbox.id).toMatch(/^sbx_[0-9a-f]{24}$/);
    expect(r.sandbox.terminated_at).toBeUndefined();
    expect(Date.parse(r.sandbox.expires_at) - Date.parse(r.sandbox.created_at)).toBe(90_000);
    const claims = await verifySandboxToken(r.token, d.env.jwks);
    expect(claims).toMatchObject({ sandboxId: r.sandbox.id, tier: 'premium' });
    // Default TTL when ttl_seconds is not set.
    const def = await c.call('CreateSandbox', { tier: 'default' });
    expect(Date.parse(def.sandbox.expires_at) - Date.parse(def.sandbox.created_at)).toBe(3600_000);
  });

  it('CreateSandbox: INVALID_ARGUMENT naming the field', async () => {
    expectStatus(await rejection(c.call('CreateSandbox', {})), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'tier');
    expectStatus(await rejection(c.call('CreateSandbox', { tier: 'gold' })), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'tier');
    expectStatus(
      await rejection(c.call('CreateSandbox', { tier: 'default', ttl_seconds: 0 })),
      grpc.status.INVALID_ARGUMENT,
      'invalid_argument',
      'ttl_seconds',
    );
    expectStatus(
      await rejection(c.call('CreateSandbox', { tier: 'default', ttl_seconds: 999_999 })),
      grpc.status.INVALID_ARGUMENT,
      'invalid_argument',
      'ttl_seconds',
    );
    expectStatus(
      await rejection(c.call('CreateSandbox', { tier: 'default', labels: { 'bad key': 'v' } })),
      grpc.status.INVALID_ARGUMENT,
      'invalid_argument',
      'labels.bad key',
    );
  });

  it('GetSandbox, ListSandboxes (filters, pages), TerminateSandbox', async () => {
    const a = (await c.call('CreateSandbox', { tier: 'restricted' })).sandbox;
    const b = (await c.call('CreateSandbox', { tier: 'restricted' })).sandbox;
    expect((await c.call('GetSandbox', { id: a.id })).sandbox).toEqual(a);

    const t = await c.call('TerminateSandbox', { id: b.id });
    expect(t.sandbox.state).toBe('terminated');
    expect(Date.parse(t.sandbox.terminated_at)).toBeGreaterThan(0);

    const list = await c.call('ListSandboxes', { tier: 'restricted' });
    expect(list.sandboxes.map((s: any) => s.id)).toEqual([a.id, b.id]);
    expect(list.next_cursor ?? '').toBe('');
    const p1 = await c.call('ListSandboxes', { tier: 'restricted', limit: 1 });
    expect(p1.sandboxes.map((s: any) => s.id)).toEqual([a.id]);
    const p2 = await c.call('ListSandboxes', { tier: 'restricted', limit: 1, cursor: p1.next_cursor });
    expect(p2.sandboxes.map((s: any) => s.id)).toEqual([b.id]);
    const active = await c.call('ListSandboxes', { tier: 'restricted', state: 'active' });
    expect(active.sandboxes.map((s: any) => s.id)).toEqual([a.id]);
  });

  it('GetSandbox / TerminateSandbox / ListSandboxes errors', async () => {
    expectStatus(await rejection(c.call('GetSandbox', { id: NO_SUCH })), grpc.status.NOT_FOUND, 'sandbox_not_found');
    expectStatus(await rejection(c.call('GetSandbox', { id: 'nope' })), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'id');
    expectStatus(await rejection(c.call('GetSandbox', {})), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'id');
    expectStatus(await rejection(c.call('TerminateSandbox', { id: NO_SUCH })), grpc.status.NOT_FOUND, 'sandbox_not_found');
    const s = (await c.call('CreateSandbox', { tier: 'default' })).sandbox;
    await c.call('TerminateSandbox', { id: s.id });
    expectStatus(await rejection(c.call('TerminateSandbox', { id: s.id })), grpc.status.FAILED_PRECONDITION, 'sandbox_terminated');
    expectStatus(await rejection(c.call('ListSandboxes', { state: 'zombie' })), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'state');
    expectStatus(await rejection(c.call('ListSandboxes', { limit: 5000 })), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'limit');
    expectStatus(await rejection(c.call('ListSandboxes', { cursor: 'abc' })), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'cursor');
  });

  it('ExecuteIntent and ListIntents', async () => {
    const s = (await c.call('CreateSandbox', { tier: 'standard' })).sandbox;
    const r = await c.call(
      'ExecuteIntent',
      {
        sandbox_id: s.id,
        capability: 'http_fetch',
        http_fetch: {
          service: 'github',
          method: 'POST',
          path: '/repos/x/y/issues',
          headers: { 'x-github-api-version': '2022-11-28', 'x-other': '1' },
          body: '{"title":"t"}',
        },
      },
      { 'x-request-id': 'grpc-req-1' },
    );
    expect(r.intent).toMatchObject({ sandbox_id: s.id, capability: 'http_fetch', service: 'github', method: 'POST', outcome: 'ok', status: 200 });
    expect(r).toMatchObject({ body: 'hello', body_encoding: 'utf8', dropped_headers: ['x-other'] });
    expect(r.headers['x-from']).toBe('egress');
    const got = egress.requests.at(-1)!;
    expect(got).toMatchObject({ method: 'POST', url: '/repos/x/y/issues', body: '{"title":"t"}' });
    expect(got.headers.host).toBe('github');
    expect(got.headers['x-request-id']).toBe('grpc-req-1');
    expect(got.headers['x-github-api-version']).toBe('2022-11-28');
    expect((await verifySandboxToken(got.headers[SANDBOX_TOKEN_HEADER] as string, d.env.jwks)).sandboxId).toBe(s.id);

    const h = await c.call('ListIntents', { sandbox_id: s.id });
    expect(h.intents).toHaveLength(1);
    expect(h.intents[0]).toMatchObject({ id: r.intent.id, outcome: 'ok', status: 200, path: '/repos/x/y/issues' });
  });

  it('ExecuteIntent / ListIntents errors', async () => {
    const s = (await c.call('CreateSandbox', { tier: 'standard' })).sandbox;
    const ok = { service: 'openai', method: 'GET', path: '/v1/models' };
    const bad = async (req: object, field: string) =>
      expectStatus(
        await rejection(c.call('ExecuteIntent', { sandbox_id: s.id, capability: 'http_fetch', ...req })),
        grpc.status.INVALID_ARGUMENT,
        'invalid_argument',
        field,
      );
    await bad({ http_fetch: { ...ok, path: 'http://evil/' } }, 'http_fetch.path');
    await bad({ http_fetch: { ...ok, method: 'TRACE' } }, 'http_fetch.method');
    await bad({ http_fetch: { ...ok, service: '' } }, 'http_fetch.service');
    await bad({ http_fetch: { ...ok, headers: { authorization: 'Bearer x' } } }, 'http_fetch.headers.authorization');
    await bad({ http_fetch: { ...ok, headers: { accept: 'a\nb' } } }, 'http_fetch.headers.accept');
    await bad({ http_fetch: { ...ok, timeout_ms: 0 } }, 'http_fetch.timeout_ms');
    await bad({}, 'http_fetch');
    expectStatus(
      await rejection(c.call('ExecuteIntent', { sandbox_id: s.id, capability: 'shell', http_fetch: ok })),
      grpc.status.INVALID_ARGUMENT,
      'invalid_argument',
      'capability',
    );
    expectStatus(
      await rejection(c.call('ExecuteIntent', { sandbox_id: 'x', capability: 'http_fetch', http_fetch: ok })),
      grpc.status.INVALID_ARGUMENT,
      'invalid_argument',
      'sandbox_id',
    );
    expectStatus(
      await rejection(c.call('ExecuteIntent', { sandbox_id: NO_SUCH, capability: 'http_fetch', http_fetch: ok })),
      grpc.status.NOT_FOUND,
      'sandbox_not_found',
    );
    await c.call('TerminateSandbox', { id: s.id });
    expectStatus(
      await rejection(c.call('ExecuteIntent', { sandbox_id: s.id, capability: 'http_fetch', http_fetch: ok })),
      grpc.status.FAILED_PRECONDITION,
      'sandbox_not_active',
    );
    expectStatus(await rejection(c.call('ListIntents', { sandbox_id: NO_SUCH })), grpc.status.NOT_FOUND, 'sandbox_not_found');
    expectStatus(await rejection(c.call('ListIntents', { sandbox_id: s.id, limit: 1001 })), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'limit');
    expectStatus(await rejection(c.call('ListIntents', {})), grpc.status.INVALID_ARGUMENT, 'invalid_argument', 'sandbox_id');
  });

  it('ExecuteIntent: UNAVAILABLE when the egress is down, DEADLINE_EXCEEDED on timeout (with the intent id)', async () => {
    const down = await startInProcess({ AGENTD_EGRESS_URL: `http://127.0.0.1:${await deadPort()}` });
    const dc = grpcClient(down.agentd.grpc.address);
    const s = (await dc.call('CreateSandbox', { tier: 'default' })).sandbox;
    const err = await rejection(
      dc.call('ExecuteIntent', { sandbox_id: s.id, capability: 'http_fetch', http_fetch: { service: 'openai', method: 'GET', path: '/' } }),
    );
    expectStatus(err, grpc.status.UNAVAILABLE, 'egress_unavailable');
    const intentId = err.metadata.get(GRPC_INTENT_ID_METADATA)[0];
    expect(intentId).toMatch(/^int_/);
    expect((await dc.call('ListIntents', { sandbox_id: s.id })).intents[0]).toMatchObject({ id: intentId, outcome: 'egress_unavailable' });

    const slow = await startEgress((_req, res) => {
      const t = setTimeout(() => res.end('late'), 2000);
      res.on('close', () => clearTimeout(t));
    });
    const sd = await startInProcess({ AGENTD_EGRESS_URL: slow.url });
    const sc = grpcClient(sd.agentd.grpc.address);
    const s2 = (await sc.call('CreateSandbox', { tier: 'default' })).sandbox;
    const t = await rejection(
      sc.call('ExecuteIntent', { sandbox_id: s2.id, capability: 'http_fetch', http_fetch: { service: 'openai', method: 'GET', path: '/', timeout_ms: 200 } }),
    );
    expectStatus(t, grpc.status.DEADLINE_EXCEEDED, 'timeout');
  });

  it('counts calls in agentd_grpc_requests_total', async () => {
    const m = await metricsText(d.agentd);
    expect(m).toMatch(/agentd_grpc_requests_total\{method="\/agentd\.v1\.Agentd\/CreateSandbox",code="OK"\} [1-9]/);
    expect(m).toMatch(/agentd_grpc_requests_total\{method="\/agentd\.v1\.Agentd\/GetSandbox",code="NOT_FOUND"\} [1-9]/);
  });
});

describe('grpc.health.v1.Health', () => {
  const check = (client: GrpcClient, service: string) =>
    new Promise<any>((resolve, reject) => client.health.Check({ service }, (err: grpc.ServiceError | null, res: any) => (err ? reject(err) : resolve(res))));

  it('Check: SERVING for "" and agentd.v1.Agentd, NOT_FOUND for others', async () => {
    expect(await check(c, '')).toEqual({ status: 'SERVING' });
    expect(await check(c, GRPC_SERVICE)).toEqual({ status: 'SERVING' });
    const err = await rejection(check(c, 'no.such.Service'));
    expect(err.code).toBe(grpc.status.NOT_FOUND);
  });

  it('Watch streams SERVING, then NOT_SERVING when the daemon drains', async () => {
    const w = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
    const wc = grpcClient(w.agentd.grpc.address);
    const seen: string[] = [];
    const stream = wc.health.Watch({ service: '' });
    const ended = new Promise<void>((resolve) => {
      stream.on('data', (m: any) => {
        seen.push(m.status);
        if (seen.length === 1) void w.agentd.close('test');
      });
      stream.on('end', () => resolve());
      stream.on('error', () => resolve());
    });
    await ended;
    expect(seen).toEqual(['SERVING', 'NOT_SERVING']);

    const unknown = c.health.Watch({ service: 'no.such.Service' });
    unknown.on('error', () => undefined); // the CANCELLED below
    const first = await new Promise<any>((resolve) => unknown.on('data', resolve));
    expect(first).toEqual({ status: 'SERVICE_UNKNOWN' });
    unknown.cancel();
  });
});

describe('server reflection', () => {
  for (const version of ['v1', 'v1alpha'] as const) {
    it(`${version}: lists the services and describes agentd.v1.Agentd`, async () => {
      const reflectionProto = path.join(
        path.dirname(createRequire(import.meta.url).resolve('@grpc/reflection/package.json')),
        'build',
        'proto',
        'grpc',
        'reflection',
        version,
        'reflection.proto',
      );
      const def = protoLoader.loadSync(reflectionProto, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
      const pkg = grpc.loadPackageDefinition(def) as any;
      const client = new pkg.grpc.reflection[version].ServerReflection(d.agentd.grpc.address, grpc.credentials.createInsecure());
      const ask = (req: object) =>
        new Promise<any>((resolve, reject) => {
          const call = client.ServerReflectionInfo();
          call.on('data', (m: any) => {
            resolve(m);
            call.end();
          });
          call.on('error', reject);
          call.write(req);
        });
      const list = await ask({ list_services: '' });
      const names = list.list_services_response.service.map((s: any) => s.name);
      expect(names).toEqual(expect.arrayContaining([GRPC_SERVICE, 'grpc.health.v1.Health']));
      const file = await ask({ file_containing_symbol: GRPC_SERVICE });
      expect(file.file_descriptor_response.file_descriptor_proto.length).toBeGreaterThan(0);
      const desc = Buffer.from(file.file_descriptor_response.file_descriptor_proto[0]).toString('latin1');
      expect(desc).toContain('ExecuteIntent');
      client.close();
    });
  }
});
