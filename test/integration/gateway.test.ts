// The gateway's data path on the harness: real Envoy, OPA, agentd; HTTP/1.1, HTTP/2 and gRPC.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { AgentdGrpc, h2Request, rawExchange, rawRequest, secretsFoundIn } from '../../scripts/local/clients.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';

const spec = shippedSpec();
let stack: Stack;
let rpc: AgentdGrpc;
const get = (path: string, headers: Record<string, string> = {}) => rawRequest(stack.ports.gateway, { path, headers });

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-gw-')) });
  rpc = new AgentdGrpc(stack.gatewayGrpc);
});
afterAll(async () => {
  rpc?.close();
  await stack?.stop();
});

describe('gateway over HTTP', () => {
  it('/health and /ready answer without a key', async () => {
    expect((await get('/health')).status).toBe(200);
    expect((await get('/ready')).status).toBe(200);
  });

  it('200 with a valid key (x-api-key or Bearer), and agentd sees who called', async () => {
    const r = await get('/api/v1/status', { 'x-api-key': stack.apiKeys['admin']! });
    expect(r.status).toBe(200);
    expect(r.json().version).toBeTruthy();
    expect((await get('/api/v1/status', { authorization: `Bearer ${stack.apiKeys['ci']}` })).status).toBe(200);
  });

  it('401 with no key, a wrong key, or a key only in the query string', async () => {
    for (const [headers, code] of [
      [{}, 'missing_api_key'],
      [{ 'x-api-key': 'agk_wrong' }, 'invalid_api_key'],
    ] as const) {
      const r = await get('/api/v1/status', headers);
      expect(r.status).toBe(401);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.json().error.code).toBe(code);
    }
    const q = await get(`/api/v1/status?api_key=${stack.apiKeys['admin']}`);
    expect(q.status).toBe(401);
  });

  it('403 for a disabled key, a wrong role, a wrong method', async () => {
    const disabled = await get('/api/v1/status', { 'x-api-key': stack.apiKeys['retired']! });
    expect([disabled.status, disabled.json().error.code]).toEqual([403, 'disabled_api_key']);
    const role = await rawRequest(stack.ports.gateway, { method: 'DELETE', path: '/api/v1/sandboxes/sbx_x', headers: { 'x-api-key': stack.apiKeys['ci']! } });
    expect([role.status, role.json().error.code]).toEqual([403, 'method_not_allowed']);
    const method = await rawRequest(stack.ports.gateway, { method: 'POST', path: '/api/v1/status', headers: { 'x-api-key': stack.apiKeys['dashboard']! } });
    expect([method.status, method.json().error.code]).toEqual([403, 'method_not_allowed']);
  });

  it('unknown routes get a JSON 404, and the admin interface is not reachable through it', async () => {
    for (const p of ['/', '/stats', '/config_dump', '/metrics']) {
      const r = await get(p, { 'x-api-key': stack.apiKeys['admin']! });
      expect(r.status, p).toBe(404);
      expect(r.json().error.code).toBe('not_found');
    }
  });

  it('works over HTTP/2 too', async () => {
    const r = await h2Request(stack.ports.gateway, { path: '/api/v1/status', headers: { 'x-api-key': stack.apiKeys['admin']! } });
    expect(r.status).toBe(200);
    expect((await h2Request(stack.ports.gateway, { path: '/api/v1/status' })).status).toBe(401);
  });

  it('refuses a body over the limit with a JSON 413 (announced, and chunked)', async () => {
    const body = JSON.stringify({ tier: 'default', labels: { big: 'x'.repeat(200_000) } });
    const r = await rawRequest(stack.ports.gateway, {
      method: 'POST',
      path: '/api/v1/sandboxes',
      headers: { 'x-api-key': stack.apiKeys['admin']!, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
      body,
    });
    expect(r.status, r.body).toBe(413);
    expect(r.json().error.code).toBe('payload_too_large');
    // Chunked (no length announced), part of it arriving after authorization: counted as a whole.
    const head = `POST /api/v1/sandboxes HTTP/1.1\r\nhost: x\r\nx-api-key: ${stack.apiKeys['admin']}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`;
    const chunk = `10000\r\n${'x'.repeat(0x10000)}\r\n`;
    const chunked = await rawExchange(stack.ports.gateway, [head, chunk, chunk, '0\r\n\r\n'], { waitMs: 5000, dripMs: 300 });
    expect(chunked.status, chunked.text.slice(0, 300)).toBe(413);
    expect(JSON.parse(chunked.body).error.code).toBe('payload_too_large');
  });

  it('refuses a body over the limit with a JSON 413 without reading it, once the key is checked', async () => {
    const r = await rawExchange(
      stack.ports.gateway,
      `POST /api/v1/sandboxes HTTP/1.1\r\nhost: x\r\nx-api-key: ${stack.apiKeys['admin']}\r\ncontent-type: application/json\r\ncontent-length: ${10 << 20}\r\n\r\n{"tier":`,
      { waitMs: 4000 },
    );
    expect(r.status, r.text.slice(0, 300)).toBe(413);
    expect(JSON.parse(r.body).error.code).toBe('payload_too_large');
    expect(r.elapsedMs).toBeLessThan(2000);
  });

  it('logs JSON access lines with the decision id and client id, never the key', async () => {
    await get('/api/v1/status?q=1', { 'x-api-key': stack.apiKeys['admin']! });
    const line = await stack.processes.gateway.waitForJsonLine((l) => l.path === '/api/v1/status' && l.status === 200 && l.client_id === 'admin');
    expect(line.decision_id).toMatch(/\w{8,}/);
    expect(line.tier).toBe('unlimited');
  });
});

describe('gateway over gRPC', () => {
  it('OK with a valid key; UNAUTHENTICATED without; PERMISSION_DENIED for a wrong role', async () => {
    const ok = await rpc.call('Status', {}, stack.apiKeys['admin']);
    expect(ok.ok).toBe(true);
    const none = await rpc.call('Status', {});
    expect(none.ok ? -1 : none.code).toBe(grpc.status.UNAUTHENTICATED);
    const reader = await rpc.call('CreateSandbox', { tier: 'default' }, stack.apiKeys['dashboard']);
    expect(reader.ok ? -1 : reader.code).toBe(grpc.status.PERMISSION_DENIED);
    const disabled = await rpc.call('Status', {}, stack.apiKeys['retired']);
    expect(disabled.ok ? -1 : disabled.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('creates a sandbox over gRPC through the gateway', async () => {
    const r = await rpc.call('CreateSandbox', { tier: 'restricted' }, stack.apiKeys['ci']);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value.sandbox?.id ?? r.value.id).toMatch(/^sbx_/);
  });
});

describe('rate limits per key, from the key tier', () => {
  it('the default tier admits 60 a minute per key, then 429 with headers; another key is unaffected', async () => {
    const key = stack.apiKeys['dashboard']!;
    const responses: Awaited<ReturnType<typeof get>>[] = [];
    // Requests already made with this key in this file count too: find the budget's end.
    for (let i = 0; i < 70; i++) responses.push(await get('/api/v1/status', { 'x-api-key': key }));
    const statuses = responses.map((r) => r.status);
    const firstLimited = statuses.indexOf(429);
    expect(firstLimited).toBeGreaterThan(50);
    // The bucket refills one token a second: on a slow machine one request after the first 429 may pass.
    expect(statuses.slice(firstLimited).filter((s) => s !== 429).length, statuses.join(' ')).toBeLessThanOrEqual(1);
    const limited = responses.findLast((r) => r.status === 429)!;
    expect(limited.json().error.code).toBe('rate_limited');
    expect(limited.headers['x-ratelimit-limit']).toBe('60');
    expect(limited.headers['x-ratelimit-remaining']).toBe('0');
    // gRPC with the same key shares the bucket (a refilled token may let one call through first).
    const codes: number[] = [];
    for (let i = 0; i < 3 && !codes.includes(grpc.status.RESOURCE_EXHAUSTED); i++) {
      const r = await rpc.call('Status', {}, key);
      codes.push(r.ok ? -1 : r.code);
    }
    expect(codes, 'gRPC calls with the exhausted key').toContain(grpc.status.RESOURCE_EXHAUSTED);
    expect(codes.filter((c) => c === -1).length).toBeLessThanOrEqual(1);
    // Another key of another client is unaffected.
    expect((await get('/api/v1/status', { 'x-api-key': stack.apiKeys['ci']! })).status).toBe(200);
  });

  it('a caller header cannot choose the tier or identity that the limit is keyed on', async () => {
    // Claiming the unlimited tier (or the admin's identity) does not lift the default tier's
    // 60 a minute: the key is limited within its budget (at most two windows, should the
    // bucket refill while this runs), whatever the previous case left in it.
    const forged = { 'x-api-key': stack.apiKeys['dashboard']!, 'x-agentd-client-id': 'admin', 'x-agentd-tier': 'unlimited' };
    let sent = 0;
    let status = 0;
    while (status !== 429 && sent < 125) {
      status = (await get('/api/v1/status', forged)).status;
      sent++;
    }
    expect(status, `${sent} requests`).toBe(429);
  });
});

describe('fail closed', () => {
  it('refuses with 503 while OPA is down, and recovers when it returns', async () => {
    await stack.processes.opa.stop();
    const down = await get('/api/v1/status', { 'x-api-key': stack.apiKeys['admin']! });
    expect(down.status).toBe(503);
    expect(down.json().error.code).toBe('authorization_unavailable');
    const grpcDown = await rpc.call('Status', {}, stack.apiKeys['admin']);
    expect(grpcDown.ok).toBe(false);
    await stack.processes.opa.start();
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      status = (await get('/api/v1/status', { 'x-api-key': stack.apiKeys['admin']! })).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 200));
    }
    expect(status).toBe(200);
  });
});

describe('secret hygiene', () => {
  it('no API key, credential or signing key appears in any log', () => {
    const found = secretsFoundIn(stack.logs(), { ...stack.apiKeys, ...stack.credentials, signingKey: stack.signingKey });
    expect(found).toEqual([]);
  });
});
