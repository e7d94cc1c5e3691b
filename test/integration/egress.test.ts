// The egress data path on the harness: agentd's http_fetch through the egress Envoy, the token
// verified by Envoy, OPA deciding per tier, the credential injected by Envoy, limits per
// sandbox x service; and an attacker sandbox talking to the egress proxy directly.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { egressCall, mintToken, rawRequest, secretsFoundIn } from '../../scripts/local/clients.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';

const spec = shippedSpec();
let stack: Stack;

const api = (method: string, path: string, body?: object) =>
  rawRequest(stack.ports.gateway, {
    method,
    path,
    headers: { 'x-api-key': stack.apiKeys['admin']!, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });

async function sandbox(tier: string): Promise<{ id: string; token: string }> {
  const r = await api('POST', '/api/v1/sandboxes', { tier });
  expect(r.status).toBe(201);
  return r.json();
}

const fetchIntent = (id: string, params: object) => api('POST', `/api/v1/sandboxes/${id}/intents`, { capability: 'http_fetch', params });

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-eg-')), withoutCredential: ['slack'] });
});
afterAll(async () => {
  await stack?.stop();
});

describe('http_fetch through agentd and egress', () => {
  it('reaches the upstream with the right credential for that service, which nobody else sees', async () => {
    const sbx = await sandbox('standard');
    for (const service of ['openai', 'anthropic', 'github']) {
      stack.upstream.clear();
      const path = { openai: '/v1/chat/completions', anthropic: '/v1/messages', github: '/repos/o/r/issues' }[service]!;
      const method = service === 'github' ? 'GET' : 'POST';
      const r = await fetchIntent(sbx.id, {
        service,
        method,
        path,
        headers: { 'content-type': 'application/json' },
        body: method === 'POST' ? '{"x":1}' : undefined,
      });
      expect(r.status, r.body).toBe(200);
      const intent = r.json();
      expect(intent.outcome).toBe('ok');
      expect(intent.status).toBe(200);
      expect(stack.upstream.received).toHaveLength(1);
      const got = stack.upstream.received[0]!;
      const c = spec.egressServices[service]!.credential!;
      expect(got.headers[c.header.toLowerCase()]).toBe(`${c.prefix}${stack.credentials[service]}`);
      // The token and sandbox headers never reach the upstream.
      expect(Object.keys(got.headers).filter((h) => h.startsWith('x-agentd') || h.startsWith('x-sandbox'))).toEqual([]);
      // The caller sees no credential.
      expect(r.body).not.toContain(stack.credentials[service]!);
    }
    const log = readFileSync(stack.processes.agentd.logFile, 'utf8');
    expect(secretsFoundIn(log, stack.credentials)).toEqual([]);
  });

  it('denied service, path or method: 403 with the reason', async () => {
    const sbx = await sandbox('restricted');
    const cases = [
      [{ service: 'openai', method: 'POST', path: '/v1/chat/completions' }, 'service_not_allowed'],
      [{ service: 'httpbin', method: 'GET', path: '/delete-everything' }, 'path_not_allowed'],
      [{ service: 'httpbin', method: 'DELETE', path: '/anything/x' }, 'method_not_allowed'],
    ] as const;
    for (const [params, reason] of cases) {
      const r = await fetchIntent(sbx.id, params);
      const intent = r.json();
      expect(intent.status, JSON.stringify(params)).toBe(403);
      expect(JSON.parse(intent.body).error.code).toBe(reason);
    }
  });

  it('an unknown service gets a JSON 404, never a pass-through', async () => {
    const sbx = await sandbox('admin');
    const r = await egressCall(stack.ports.egress, 'evil.example.com', sbx.token, { path: '/' });
    expect(r.status).toBe(404);
    expect(r.json().error.code).toBe('unknown_service');
    expect(stack.upstream.received.filter((q) => q.path === '/')).toEqual([]);
  });

  it('a service without a configured credential answers 503 and calls nobody', async () => {
    const sbx = await sandbox('premium');
    stack.upstream.clear();
    const r = await egressCall(stack.ports.egress, 'slack', sbx.token, { method: 'POST', path: '/api/chat.postMessage' });
    expect(r.status).toBe(503);
    expect(r.json().error.code).toBe('credential_not_configured');
    expect(stack.upstream.received).toEqual([]);
  });
});

describe('sandbox identity comes only from a valid token', () => {
  it('no token, a forged token, an altered token, an expired token: 401 JSON', async () => {
    const sbx = await sandbox('restricted');
    const forged = await mintToken(Buffer.from('not-the-key-not-the-key-not-the-key!').toString('base64url'), { sub: sbx.id, tier: 'admin' });
    const [h, p, s] = sbx.token.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const altered = [h, Buffer.from(JSON.stringify({ ...claims, tier: 'admin' })).toString('base64url'), s].join('.');
    const expired = await mintToken(stack.signingKey, { sub: sbx.id, tier: 'restricted', expInSeconds: -120 });
    const wrongAudience = await mintToken(stack.signingKey, { sub: sbx.id, tier: 'restricted', aud: 'someone-else' });
    for (const [name, token] of [
      ['none', undefined],
      ['forged', forged],
      ['altered', altered],
      ['expired', expired],
      ['audience', wrongAudience],
    ] as const) {
      const r = await egressCall(stack.ports.egress, 'httpbin', token, { path: '/get' });
      expect(r.status, name).toBe(name === 'audience' ? 403 : 401);
      expect(r.json().error.code, name).toMatch(/sandbox_token/);
    }
  });

  it('forged X-Sandbox-ID or tier headers have no effect: the token decides', async () => {
    const a = await sandbox('restricted');
    const b = await sandbox('admin');
    const r = await egressCall(stack.ports.egress, 'openai', a.token, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'x-sandbox-id': b.id, 'x-sandbox-tier': 'admin', 'x-agentd-sandbox-tier': 'admin' },
    });
    expect(r.status).toBe(403);
    expect(r.json().error.code).toBe('service_not_allowed');
    const line = await stack.processes.egress.waitForJsonLine((l) => l.service === 'openai' && (l.sandbox_id === a.id || l.sandbox_id === b.id));
    expect(line.sandbox_id).toBe(a.id);
    expect(line.reason).toBe('service_not_allowed');
  });
});

describe('rate limits per sandbox x service', () => {
  it('the restricted tier admits 10 a minute per sandbox on httpbin; another sandbox is unaffected', async () => {
    const a = await sandbox('restricted');
    const b = await sandbox('restricted');
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await egressCall(stack.ports.egress, 'httpbin', a.token, { path: '/get' })).status);
    expect(statuses).toEqual([...Array(10).fill(200), 429, 429]);
    const limited = await egressCall(stack.ports.egress, 'httpbin', a.token, { path: '/get' });
    expect(limited.json().error.code).toBe('rate_limited');
    expect((await egressCall(stack.ports.egress, 'httpbin', b.token, { path: '/get' })).status).toBe(200);
  });

  it('the budget is per service: a standard sandbox limited on openai still reaches github', async () => {
    const a = await sandbox('standard');
    let last = 0;
    for (let i = 0; i < 61; i++) last = (await egressCall(stack.ports.egress, 'openai', a.token, { method: 'POST', path: '/v1/embeddings' })).status;
    expect(last).toBe(429);
    expect((await egressCall(stack.ports.egress, 'github', a.token, { path: '/user' })).status).toBe(200);
  });
});

describe('secret hygiene', () => {
  it('no API key, credential or signing key appears in any log', () => {
    expect(secretsFoundIn(stack.logs(), { ...stack.apiKeys, ...stack.credentials, signingKey: stack.signingKey })).toEqual([]);
  });
});
