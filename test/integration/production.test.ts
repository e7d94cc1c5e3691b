// What a production deployment relies on, proven on the harness (real gateway and egress Envoy,
// OPA, agentd in production mode): TLS at the gateway, tenant isolation and tier ceilings over
// HTTP and gRPC, agentd trusting identity only from the gateway, revocation in under a second,
// authorization before bodies, timeouts, the overload manager, forwarding headers kept from
// upstreams, and JSON refusals for malformed query strings.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { GATEWAY_TOKEN_HEADER } from '../../agentd/src/contract.ts';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { AgentdGrpc, egressCall, mintToken, rawExchange, rawRequest, type RawResponse } from '../../scripts/local/clients.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';

const spec = shippedSpec();
const tmp = (name: string) => mkdtempSync(join(tmpdir(), `agentd-${name}-`));

/** curl over TLS with the stack's CA: status, HTTP version and body. */
function curlTls(stack: Stack, path: string, args: string[], headers: Record<string, string> = {}): { status: number; version: string; body: string } {
  const out = execFileSync(
    'curl',
    [
      '-sS',
      '--max-time',
      '10',
      '--cacert',
      stack.ca.caFile,
      '--resolve',
      `localhost:${stack.ports.gateway}:127.0.0.1`,
      ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]),
      '-w',
      '\n%{http_code} %{http_version}',
      ...args,
      `https://localhost:${stack.ports.gateway}${path}`,
    ],
    { encoding: 'utf8' },
  );
  const lines = out.split('\n');
  const [status, version] = lines.pop()!.split(' ');
  return { status: Number(status), version: version!, body: lines.join('\n') };
}

describe('TLS at the gateway', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ spec, dir: tmp('tls'), tls: true });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('serves HTTP/1.1 and HTTP/2 over TLS (ALPN), verified against the CA', () => {
    const key = { 'x-api-key': stack.apiKeys['admin']! };
    const h1 = curlTls(stack, '/api/v1/status', ['--http1.1'], key);
    expect([h1.status, h1.version]).toEqual([200, '1.1']);
    expect(JSON.parse(h1.body).version).toEqual(expect.any(String));
    const h2 = curlTls(stack, '/api/v1/status', ['--http2'], key);
    expect([h2.status, h2.version]).toEqual([200, '2']);
    const tls12 = curlTls(stack, '/api/v1/status', ['--tlsv1.2', '--tls-max', '1.2'], key);
    expect(tls12.status).toBe(200);
    // A refusal over TLS is the same JSON as in plaintext.
    const refused = curlTls(stack, '/api/v1/status', ['--http2'], {});
    expect([refused.status, JSON.parse(refused.body).error.code]).toEqual([401, 'missing_api_key']);
  });

  it('serves gRPC over TLS', async () => {
    const rpc = new AgentdGrpc(`127.0.0.1:${stack.ports.gateway}`, { caFile: stack.ca.caFile, servername: 'localhost' });
    try {
      const ok = await rpc.call('Status', {}, stack.apiKeys['admin']!);
      expect(ok.ok, JSON.stringify(ok)).toBe(true);
      const denied = await rpc.call('Status', {});
      expect(denied).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED });
    } finally {
      rpc.close();
    }
  });

  it('refuses plaintext on the TLS port', async () => {
    await expect(
      rawRequest(stack.ports.gateway, { path: '/api/v1/status', headers: { 'x-api-key': stack.apiKeys['admin']! }, timeoutMs: 3000 }),
    ).rejects.toThrow();
    const h2c = await rawExchange(stack.ports.gateway, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', { waitMs: 3000 });
    expect(h2c.text).not.toContain('HTTP/');
    expect(h2c.closed).toBe(true);
  });
});

describe('the production data path', () => {
  let stack: Stack;
  let rpc: AgentdGrpc;
  const call = (client: string, method: string, path: string, body?: object, headers: Record<string, string> = {}): Promise<RawResponse> =>
    rawRequest(stack.ports.gateway, {
      method,
      path,
      headers: { 'x-api-key': stack.apiKeys[client]!, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  beforeAll(async () => {
    stack = await startStack({ spec, dir: tmp('prod'), limits: { requestTimeoutSeconds: 2, maxDownstreamConnections: 12 } });
    rpc = new AgentdGrpc(stack.gatewayGrpc);
  });
  afterAll(async () => {
    rpc?.close();
    await stack?.stop();
  });

  describe('tenant isolation and tier ceilings', () => {
    it("a client sees and acts on its own sandboxes only; another's answers 404 as if it did not exist; admins see all", async () => {
      const mine = await call('ci', 'POST', '/api/v1/sandboxes', { tier: 'standard' });
      expect(mine.status, mine.body).toBe(201);
      const id = mine.json().id as string;
      expect(mine.json().owner).toBe('ci');
      const ghost = 'sbx_000000000000000000000000';
      const asReader = await call('dashboard', 'GET', `/api/v1/sandboxes/${id}`);
      const nonexistent = await call('dashboard', 'GET', `/api/v1/sandboxes/${ghost}`);
      expect([asReader.status, asReader.json().error.code]).toEqual([404, 'sandbox_not_found']);
      // The answer for someone else's sandbox is the answer for no sandbox at all.
      expect(asReader.json().error.message.replace(id, 'ID')).toBe(nonexistent.json().error.message.replace(ghost, 'ID'));
      expect((await call('dashboard', 'GET', `/api/v1/sandboxes/${id}/intents`)).status).toBe(404);
      const readerList = (await call('dashboard', 'GET', '/api/v1/sandboxes')).json().sandboxes as { id: string }[];
      expect(readerList.map((s) => s.id)).not.toContain(id);
      const ciList = (await call('ci', 'GET', '/api/v1/sandboxes')).json().sandboxes as { id: string; owner: string }[];
      expect(ciList.map((s) => s.id)).toContain(id);
      expect(new Set(ciList.map((s) => s.owner))).toEqual(new Set(['ci']));
      const adminList = (await call('admin', 'GET', '/api/v1/sandboxes')).json().sandboxes as { id: string }[];
      expect(adminList.map((s) => s.id)).toContain(id);
      expect((await call('admin', 'GET', `/api/v1/sandboxes/${id}`)).status).toBe(200);
    });

    it('a role creates only the sandbox tiers the policy grants it (403 JSON), whatever identity headers the caller sends', async () => {
      const denied = await call('ci', 'POST', '/api/v1/sandboxes', { tier: 'admin' });
      expect([denied.status, denied.json().error.code]).toEqual([403, 'tier_not_allowed']);
      expect(denied.headers['content-type']).toContain('application/json');
      const forged = await call(
        'ci',
        'POST',
        '/api/v1/sandboxes',
        { tier: 'admin' },
        {
          'x-agentd-client-id': 'admin',
          'x-agentd-client-role': 'admin',
          'x-agentd-client-scope': 'all',
          'x-agentd-sandbox-tiers': 'admin',
          [GATEWAY_TOKEN_HEADER]: 'guess',
        },
      );
      expect([forged.status, forged.json().error.code]).toEqual([403, 'tier_not_allowed']);
      const adminTier = await call('admin', 'POST', '/api/v1/sandboxes', { tier: 'admin' });
      expect(adminTier.status).toBe(201);
      expect((await call('ci', 'POST', '/api/v1/sandboxes', { tier: 'premium' })).status).toBe(201);
      // Forged scope does not widen a list either.
      const list = (await call('ci', 'GET', '/api/v1/sandboxes', undefined, { 'x-agentd-client-scope': 'all', 'x-agentd-client-id': 'admin' })).json()
        .sandboxes as { owner: string }[];
      expect(list.length).toBeGreaterThan(0);
      expect(list.every((s) => s.owner === 'ci')).toBe(true);
    });

    it("the same over gRPC: PERMISSION_DENIED for a tier above the role, NOT_FOUND for another client's sandbox", async () => {
      const denied = await rpc.call('CreateSandbox', { tier: 'admin' }, stack.apiKeys['ci']!);
      expect(denied).toMatchObject({ ok: false, code: grpc.status.PERMISSION_DENIED });
      const made = await rpc.call('CreateSandbox', { tier: 'restricted' }, stack.apiKeys['ci']!);
      expect(made.ok, JSON.stringify(made)).toBe(true);
      const id = (made as { value: { sandbox: { id: string } } }).value.sandbox.id;
      expect(await rpc.call('GetSandbox', { id }, stack.apiKeys['dashboard']!)).toMatchObject({ ok: false, code: grpc.status.NOT_FOUND });
      expect(await rpc.call('GetSandbox', { id }, stack.apiKeys['admin']!)).toMatchObject({ ok: true });
    });

    it('non-admin roles do not see internal details; /ready reveals no address', async () => {
      const reader = (await call('dashboard', 'GET', '/api/v1/status')).json();
      expect(Object.keys(reader)).not.toContain('egress_url');
      expect(Object.keys(reader)).not.toContain('token_kid');
      const admin = (await call('admin', 'GET', '/api/v1/status')).json();
      expect(admin.egress_url).toBe(stack.egressUrl);
      const ready = await rawRequest(stack.ports.gateway, { path: '/ready' });
      expect(ready.status).toBe(200);
      expect(ready.json().status).toBe('ready');
      expect(ready.body).not.toMatch(/127\.0\.0\.1|http:|localhost|:\d{4,5}/);
    });
  });

  describe('agentd trusts identity only from the gateway', () => {
    it('refuses a request that did not come through the gateway, whatever identity it claims (HTTP and gRPC)', async () => {
      const forged = { 'x-agentd-client-id': 'admin', 'x-agentd-client-role': 'admin', 'x-agentd-client-scope': 'all', 'x-agentd-sandbox-tiers': 'admin' };
      for (const headers of [forged, { ...forged, [GATEWAY_TOKEN_HEADER]: 'not-the-token-not-the-token' }]) {
        const r = await rawRequest(stack.ports.agentdHttp, { path: '/api/v1/sandboxes', headers });
        expect([r.status, r.json().error.code]).toEqual([401, 'unauthenticated']);
      }
      const direct = new AgentdGrpc(`127.0.0.1:${stack.ports.agentdGrpc}`);
      try {
        expect(await direct.call('ListSandboxes', {}, undefined, forged)).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED });
      } finally {
        direct.close();
      }
      // The real token (what the gateway injects) is what makes the difference.
      const withToken = await rawRequest(stack.ports.agentdHttp, {
        path: '/api/v1/sandboxes',
        headers: { ...forged, [GATEWAY_TOKEN_HEADER]: stack.gatewayToken },
      });
      expect(withToken.status).toBe(200);
    });
  });

  describe('revocation at the egress proxy', () => {
    it("a terminated sandbox's token stops working within a second, without restarting anything", async () => {
      const s = (await call('admin', 'POST', '/api/v1/sandboxes', { tier: 'restricted' })).json() as { id: string; token: string };
      expect((await egressCall(stack.ports.egress, 'httpbin', s.token, { path: '/get' })).status).toBe(200);
      const pids = Object.values(stack.processes).map((p) => p.pid);
      const t0 = Date.now();
      expect((await call('admin', 'DELETE', `/api/v1/sandboxes/${s.id}`)).status).toBe(200);
      let r = await egressCall(stack.ports.egress, 'httpbin', s.token, { path: '/get' });
      while (r.status === 200 && Date.now() - t0 < 5000) {
        await new Promise((res) => setTimeout(res, 20));
        r = await egressCall(stack.ports.egress, 'httpbin', s.token, { path: '/get' });
      }
      const elapsed = Date.now() - t0;
      expect([r.status, r.json().error.code]).toEqual([401, 'sandbox_not_active']);
      expect(elapsed, `revoked after ${elapsed} ms`).toBeLessThan(1000);
      expect(Object.values(stack.processes).map((p) => p.pid)).toEqual(pids);
    });

    it('a token without exp is refused, even when correctly signed for a live sandbox', async () => {
      const s = (await call('admin', 'POST', '/api/v1/sandboxes', { tier: 'restricted' })).json() as { id: string };
      const noExp = await mintToken(stack.signingKey, { sub: s.id, tier: 'restricted', expInSeconds: null });
      const r = await egressCall(stack.ports.egress, 'httpbin', noExp, { path: '/get' });
      expect([r.status, r.json().error.code]).toEqual([401, 'token_without_expiry']);
    });
  });

  describe('authorization before bodies, timeouts', () => {
    it('a request without a valid key that announces a large body gets 401 at once, and its connection is closed', async () => {
      const r = await rawExchange(
        stack.ports.gateway,
        'POST /api/v1/sandboxes HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 52428800\r\n\r\n{"tier":',
        { waitMs: 4000 },
      );
      expect(r.status).toBe(401);
      expect(JSON.parse(r.body).error.code).toBe('missing_api_key');
      // Answered and closed at once: nothing waits for the 50 MB that were announced.
      expect(r.closed).toBe(true);
      expect(r.elapsedMs).toBeLessThan(1500);
    });

    it('a trickled chunked body without a valid key gets 401 before the body ends', async () => {
      const head = 'POST /api/v1/sandboxes HTTP/1.1\r\nhost: x\r\nx-api-key: agk_wrong\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{\r\n';
      // Five more one-byte chunks, one every 500 ms: the body would take 2.5 s to arrive.
      const r = await rawExchange(stack.ports.gateway, [head, '1\r\n"\r\n', '1\r\nt\r\n', '1\r\ni\r\n', '1\r\ne\r\n', '1\r\nr\r\n'], {
        waitMs: 4000,
        dripMs: 500,
      });
      expect(r.status).toBe(401);
      expect(JSON.parse(r.body).error.code).toBe('invalid_api_key');
      expect(r.closed).toBe(true);
      expect(r.elapsedMs).toBeLessThan(1500);
    });

    it('an authorized request whose body does not arrive in time gets 408 JSON and its connection closed', async () => {
      const r = await rawExchange(
        stack.ports.gateway,
        `POST /api/v1/sandboxes HTTP/1.1\r\nhost: x\r\nx-api-key: ${stack.apiKeys['admin']}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"tier":`,
        { waitMs: 6000 },
      );
      expect(r.status).toBe(408);
      expect(JSON.parse(r.body).error.code).toBe('request_timeout');
      expect(r.closed).toBe(true);
      // The stack's request timeout is 2 s.
      expect(r.elapsedMs).toBeGreaterThanOrEqual(1500);
      expect(r.elapsedMs).toBeLessThan(4500);
    });

    it('caps downstream connections; the stats listener still answers probes', async () => {
      const idle: Socket[] = [];
      try {
        for (let i = 0; i < 12; i++) {
          idle.push(
            await new Promise<Socket>((res, rej) => {
              const s = connect(stack.ports.gateway, '127.0.0.1', () => res(s));
              s.on('error', rej);
            }),
          );
        }
        await new Promise((res) => setTimeout(res, 300));
        const over = await rawExchange(stack.ports.gateway, 'GET /health HTTP/1.1\r\nhost: x\r\n\r\n', { waitMs: 3000 });
        expect(over.text).toBe('');
        expect(over.closed).toBe(true);
        expect((await rawRequest(stack.ports.gatewayStats, { path: '/ready' })).status).toBe(200);
      } finally {
        for (const s of idle) s.destroy();
      }
      await new Promise((res) => setTimeout(res, 300));
      expect((await rawRequest(stack.ports.gateway, { path: '/health' })).status).toBe(200);
    });
  });

  describe('egress keeps the caller out of upstream requests', () => {
    it('removes forwarding headers (x-forwarded-for, forwarded, x-real-ip, via) before upstream', async () => {
      const s = (await call('admin', 'POST', '/api/v1/sandboxes', { tier: 'restricted' })).json() as { token: string };
      stack.upstream.clear();
      const r = await egressCall(stack.ports.egress, 'httpbin', s.token, {
        path: '/get',
        headers: {
          'x-forwarded-for': '10.1.2.3',
          forwarded: 'for=10.1.2.3',
          'x-real-ip': '10.1.2.3',
          via: '1.1 sandbox',
          'x-forwarded-host': 'evil',
          'x-forwarded-proto': 'http',
        },
      });
      expect(r.status).toBe(200);
      expect(stack.upstream.received).toHaveLength(1);
      const sent = Object.keys(stack.upstream.received[0]!.headers);
      for (const h of ['x-forwarded-for', 'forwarded', 'x-real-ip', 'via', 'x-forwarded-host', 'x-forwarded-proto', 'x-envoy-external-address'])
        expect(sent, h).not.toContain(h);
    });
  });

  describe('refusals stay JSON', () => {
    it.each(['/api/v1/sandboxes?limit=1;x', '/api/v1/sandboxes?%zz', '/api/v1/sandboxes?state=%', '/api/v1/sandboxes?limit=%ff%fe'])(
      '%s: a JSON error with the right status, with and without a key',
      async (path) => {
        // Refused at the gateway (the policy engine cannot parse it: bad_request) or by agentd
        // (invalid_argument): either way 400 with the JSON error shape, and never passed on wrong.
        for (const r of [await call('admin', 'GET', path), await rawRequest(stack.ports.gateway, { path })]) {
          expect(r.headers['content-type'], r.body).toContain('application/json');
          const code = r.json().error.code as string;
          expect([r.status, ['bad_request', 'invalid_argument', 'missing_api_key'].includes(code)], r.body).toEqual([
            code === 'missing_api_key' ? 401 : 400,
            true,
          ]);
          expect(typeof r.json().error.message).toBe('string');
        }
      },
    );
  });
});

describe('the overload manager', () => {
  let stack: Stack;
  beforeAll(async () => {
    // A heap ceiling below what Envoy uses at rest: every new request is over the threshold.
    stack = await startStack({ spec, dir: tmp('overload'), limits: { maxHeapBytes: 1 << 20 } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('answers 503 JSON `overloaded` instead of taking more work', async () => {
    // The overload manager samples the heap every 250 ms: give it a moment after start.
    const t0 = Date.now();
    let r = await rawRequest(stack.ports.gateway, { path: '/api/v1/status', headers: { 'x-api-key': stack.apiKeys['admin']! } });
    while (r.status !== 503 && Date.now() - t0 < 3000) {
      await new Promise((res) => setTimeout(res, 100));
      r = await rawRequest(stack.ports.gateway, { path: '/api/v1/status', headers: { 'x-api-key': stack.apiKeys['admin']! } });
    }
    expect(r.status).toBe(503);
    expect(r.headers['content-type']).toContain('application/json');
    expect(r.json().error.code).toBe('overloaded');
    const e = await egressCall(stack.ports.egress, 'httpbin', undefined, { path: '/get' });
    expect([e.status, e.json().error.code]).toEqual([503, 'overloaded']);
  });
});
