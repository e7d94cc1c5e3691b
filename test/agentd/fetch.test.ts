// http_fetch against a stand-in egress proxy: what the egress receives (Host = service, a
// verifiable sandbox token with the right claims, no credentials, only allowlisted headers),
// and timeouts, the size cap, redirects (not followed), an unreachable egress.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARDED_REQUEST_HEADERS, REQUEST_ID_HEADER, SANDBOX_TOKEN_HEADER, TOKEN_AUDIENCE, TOKEN_ISSUER } from '../../agentd/src/contract.ts';
import { verifySandboxToken } from '../../agentd/src/core/tokens.ts';
import { cleanupAll, deadPort, metricsText, startEgress, startInProcess, type InProcess, type StandInEgress } from './support.ts';

let d: InProcess;
let egress: StandInEgress;
const MAX_BYTES = 4096;

beforeAll(async () => {
  egress = await startEgress();
  d = await startInProcess({
    AGENTD_EGRESS_URL: egress.url,
    AGENTD_FETCH_MAX_BYTES: String(MAX_BYTES),
    AGENTD_FETCH_TIMEOUT_MS: '2000',
    AGENTD_FETCH_MAX_TIMEOUT_MS: '5000',
  });
});
afterAll(cleanupAll);

async function sandbox(tier = 'standard') {
  const r = await d.api('POST', '/api/v1/sandboxes', { tier, ttl_seconds: 600 });
  expect(r.status).toBe(201);
  return r.json as { id: string; token: string; expires_at: string; tier: string };
}

function fetchIntent(id: string, params: Record<string, unknown>, headers?: Record<string, string>) {
  return d.api(
    'POST',
    `/api/v1/sandboxes/${id}/intents`,
    { capability: 'http_fetch', params: { service: 'openai', method: 'GET', path: '/v1/models', ...params } },
    headers,
  );
}

describe('what the egress proxy receives', () => {
  it('Host = service, the path, a verifiable token naming the sandbox, no credentials, only allowlisted headers', async () => {
    const s = await sandbox('premium');
    egress.handler = (_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json', 'x-upstream': 'yes' });
      res.end('{"created":true}');
    };
    const r = await fetchIntent(
      s.id,
      {
        service: 'anthropic',
        method: 'POST',
        path: '/v1/messages?beta=true',
        headers: {
          'Content-Type': 'application/json',
          'anthropic-version': '2023-06-01',
          'User-Agent': 'agent/1.0',
          'X-Custom-Thing': 'dropped',
          Accept: 'application/json',
        },
        body: '{"model":"claude","messages":[]}',
      },
      { authorization: 'Bearer caller-credential', [REQUEST_ID_HEADER]: 'rid-42' },
    );
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ status: 201, outcome: 'ok', body: '{"created":true}', dropped_headers: ['x-custom-thing'] });
    expect(r.json.headers['x-upstream']).toBe('yes');

    const got = egress.requests.at(-1)!;
    expect(got.method).toBe('POST');
    expect(got.url).toBe('/v1/messages?beta=true');
    expect(got.headers.host).toBe('anthropic');
    expect(got.body).toBe('{"model":"claude","messages":[]}');
    expect(got.headers[REQUEST_ID_HEADER]).toBe('rid-42');
    expect(got.headers['accept-encoding']).toBe('identity');
    // No credential of any kind, nothing the caller did not allowlist.
    for (const h of ['authorization', 'proxy-authorization', 'cookie', 'x-api-key', 'x-custom-thing']) expect(got.headers[h]).toBeUndefined();
    const allowed = new Set<string>([
      ...FORWARDED_REQUEST_HEADERS,
      'host',
      SANDBOX_TOKEN_HEADER,
      REQUEST_ID_HEADER,
      'accept-encoding',
      'content-length',
      'connection',
      'transfer-encoding',
    ]);
    for (const name of Object.keys(got.headers)) expect(allowed.has(name), `unexpected header ${name}`).toBe(true);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['anthropic-version']).toBe('2023-06-01');
    expect(got.headers['user-agent']).toBe('agent/1.0');

    // The token verifies with the JWKS file (what Envoy's jwt_authn does) and names the sandbox.
    const token = got.headers[SANDBOX_TOKEN_HEADER] as string;
    const claims = await verifySandboxToken(token, d.env.jwks);
    expect(claims).toMatchObject({ sandboxId: s.id, tier: 'premium', kid: 'test-key-1' });
    expect(claims.expiresAt).toBe(Math.floor(Date.parse(s.expires_at) / 1000));
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
    expect(payload).toMatchObject({ iss: TOKEN_ISSUER, aud: TOKEN_AUDIENCE, sub: s.id, tier: 'premium' });
    const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString());
    expect(header).toMatchObject({ alg: 'HS256', kid: 'test-key-1' });

    // The history keeps the forwarded headers (never credentials).
    const h = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents[0].request_headers).toEqual({
      'content-type': 'application/json',
      'anthropic-version': '2023-06-01',
      'user-agent': 'agent/1.0',
      accept: 'application/json',
    });
  });

  it('tokens of different sandboxes name their own sandbox', async () => {
    egress.handler = (_req, res) => res.end('ok');
    const a = await sandbox('default');
    const b = await sandbox('admin');
    await fetchIntent(a.id, {});
    const ta = egress.requests.at(-1)!.headers[SANDBOX_TOKEN_HEADER] as string;
    await fetchIntent(b.id, {});
    const tb = egress.requests.at(-1)!.headers[SANDBOX_TOKEN_HEADER] as string;
    expect((await verifySandboxToken(ta, d.env.jwks)).sandboxId).toBe(a.id);
    expect(await verifySandboxToken(tb, d.env.jwks)).toMatchObject({ sandboxId: b.id, tier: 'admin' });
    expect((await verifySandboxToken(a.token, d.env.jwks)).sandboxId).toBe(a.id);
  });

  it('every method on the allowlist goes through; HEAD has no body', async () => {
    const s = await sandbox();
    egress.handler = (req, res) => {
      res.writeHead(200, { 'x-method': req.method });
      res.end(req.method === 'HEAD' ? undefined : 'body');
    };
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']) {
      const r = await fetchIntent(s.id, { method, ...(method === 'POST' || method === 'PUT' || method === 'PATCH' ? { body: '{}' } : {}) });
      expect(r.status).toBe(200);
      expect(r.json.headers['x-method']).toBe(method);
      expect(egress.requests.at(-1)!.method).toBe(method);
      expect(r.json.body).toBe(method === 'HEAD' ? '' : 'body');
    }
  });
});

describe('upstream behaviour', () => {
  it('any upstream status is outcome ok with that status', async () => {
    const s = await sandbox();
    egress.handler = (_req, res) => {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end('{"error":"denied by policy"}');
    };
    const r = await fetchIntent(s.id, {});
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ outcome: 'ok', status: 403, body: '{"error":"denied by policy"}' });
  });

  it('redirects are returned as they are, not followed', async () => {
    const s = await sandbox();
    egress.handler = (req, res) => {
      if (req.url === '/start') {
        res.writeHead(302, { location: '/elsewhere' });
        res.end();
      } else {
        res.end('followed');
      }
    };
    const before = egress.requests.length;
    const r = await fetchIntent(s.id, { path: '/start' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ outcome: 'ok', status: 302 });
    expect(r.json.headers.location).toBe('/elsewhere');
    expect(egress.requests.length).toBe(before + 1);
  });

  it('bodies over AGENTD_FETCH_MAX_BYTES are cut and flagged truncated', async () => {
    const s = await sandbox();
    egress.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      // Streamed in pieces, far more than the cap.
      for (let i = 0; i < 64; i++) res.write('abcdefghijklmnop'.repeat(64));
      res.end();
    };
    const r = await fetchIntent(s.id, {});
    expect(r.status).toBe(200);
    expect(r.json.truncated).toBe(true);
    expect(r.json.body.length).toBe(MAX_BYTES);
    expect(r.json.body_bytes).toBe(MAX_BYTES);
    const exact = await (async () => {
      egress.handler = (_req, res) => res.end('x'.repeat(MAX_BYTES));
      return fetchIntent(s.id, {});
    })();
    expect(exact.json).toMatchObject({ truncated: false, body_bytes: MAX_BYTES });
    const h = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents.map((i: any) => i.truncated)).toEqual([true, false]);
  });

  it('binary bodies come back as base64', async () => {
    const s = await sandbox();
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80]);
    egress.handler = (_req, res) => res.end(bytes);
    const r = await fetchIntent(s.id, {});
    expect(r.json.body_encoding).toBe('base64');
    expect(Buffer.from(r.json.body, 'base64').equals(bytes)).toBe(true);
  });

  it('a slow upstream times out: 504, outcome timeout, recorded', async () => {
    const s = await sandbox();
    egress.handler = (_req, res) => {
      const t = setTimeout(() => res.end('late'), 3000);
      res.on('close', () => clearTimeout(t));
    };
    const started = Date.now();
    const r = await fetchIntent(s.id, { timeout_ms: 300 });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(r.status).toBe(504);
    expect(r.json.error.code).toBe('timeout');
    expect(r.json.intent).toMatchObject({ outcome: 'timeout', status: null });
    const h = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents[0]).toMatchObject({ id: r.json.intent.id, outcome: 'timeout' });
  });

  it('the default timeout (AGENTD_FETCH_TIMEOUT_MS) applies when none is given', async () => {
    const s = await sandbox();
    egress.handler = (_req, res) => {
      res.writeHead(200);
      res.write('partial');
      const t = setTimeout(() => res.end(), 4000);
      res.on('close', () => clearTimeout(t));
    };
    const r = await fetchIntent(s.id, {});
    expect(r.status).toBe(504);
    expect(r.json.intent).toMatchObject({ outcome: 'timeout', status: 200 });
    expect(r.json.intent.duration_ms).toBeGreaterThanOrEqual(1900);
    expect(r.json.intent.duration_ms).toBeLessThan(3500);
  });

  it('metrics count intents by outcome and egress requests by service and status', async () => {
    const m = await metricsText(d.agentd);
    expect(m).toMatch(/agentd_intents_total\{capability="http_fetch",outcome="ok"\} [1-9]/);
    expect(m).toMatch(/agentd_intents_total\{capability="http_fetch",outcome="timeout"\} 2/);
    expect(m).toMatch(/agentd_egress_requests_total\{service="anthropic",status="201"\} 1/);
    expect(m).toMatch(/agentd_egress_requests_total\{service="openai",status="302"\} 1/);
    expect(m).toMatch(/agentd_egress_requests_total\{service="openai",status="timeout"\} 1/);
    expect(m).toMatch(/agentd_intent_duration_seconds_count\{capability="http_fetch"\} [1-9]/);
  });
});

describe('egress proxy down', () => {
  it('502 with outcome egress_unavailable, recorded, and /ready still ready (the egress is not probed)', async () => {
    const port = await deadPort();
    const down = await startInProcess({ AGENTD_EGRESS_URL: `http://127.0.0.1:${port}` });
    const s = (await down.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const r = await down.api('POST', `/api/v1/sandboxes/${s.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'openai', method: 'GET', path: '/' },
    });
    expect(r.status).toBe(502);
    expect(r.json.error.code).toBe('egress_unavailable');
    expect(r.json.intent).toMatchObject({ outcome: 'egress_unavailable', status: null, sandbox_id: s.id });
    const h = await down.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents[0]).toMatchObject({ outcome: 'egress_unavailable' });
    const ready = await down.api('GET', '/ready');
    expect(ready.status).toBe(200);
    expect(ready.json).toEqual({ status: 'ready', checks: { storage: true, draining: false } });
    expect(ready.text).not.toContain(String(port));
    expect(await metricsText(down.agentd)).toMatch(/agentd_egress_requests_total\{service="openai",status="unavailable"\} 1/);
  });

  it('an egress that drops the connection is egress_unavailable too', async () => {
    const s = await sandbox();
    egress.handler = (_req, res) => res.socket?.destroy();
    const r = await fetchIntent(s.id, {});
    expect(r.status).toBe(502);
    expect(r.json.intent.outcome).toBe('egress_unavailable');
  });
});
