// The HTTP API over real HTTP: every route's happy path, bad input (400 naming the field), not
// found, conflict; error format (malformed URLs and query strings too); OpenAPI; metrics on their
// own listener; request ids; log redaction.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { METRICS, OPENAPI_PATH, REQUEST_ID_HEADER, SANDBOX_TOKEN_HEADER } from '../../agentd/src/contract.ts';
import { cleanupAll, startEgress, startInProcess, type InProcess, type StandInEgress } from './support.ts';

let d: InProcess;
let egress: StandInEgress;

beforeAll(async () => {
  egress = await startEgress();
  d = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
});
afterAll(cleanupAll);

const NO_SUCH = 'sbx_000000000000000000000000';

async function create(body: object = { tier: 'default' }) {
  const r = await d.api('POST', '/api/v1/sandboxes', body);
  expect(r.status).toBe(201);
  return r.json;
}

function expectError(r: { status: number; json: any; headers: Headers }, status: number, code: string, field?: string) {
  expect(r.status).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  expect(r.json.error.code).toBe(code);
  expect(typeof r.json.error.message).toBe('string');
  if (field !== undefined) {
    expect(r.json.error.field).toBe(field);
    expect(r.json.error.message).toContain(field);
  }
}

describe('system routes', () => {
  it('GET /health answers ok', async () => {
    const r = await d.api('GET', '/health');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: 'ok' });
  });

  it('GET /ready answers booleans only: no egress probe, no address', async () => {
    const r = await d.api('GET', '/ready');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: 'ready', checks: { storage: true, draining: false } });
    expect(r.text).not.toContain('127.0.0.1');
    expect(r.text).not.toContain(String(egress.port));
  });

  it('GET /ready is 503 with the failed check named when storage is gone, and still no internals', async () => {
    const x = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
    const storage = (x.agentd.service as unknown as { deps: { storage: { close(): void } } }).deps.storage;
    storage.close();
    const r = await x.api('GET', '/ready');
    expect(r.status).toBe(503);
    expect(r.json).toEqual({ status: 'not_ready', checks: { storage: false, draining: false }, error: { code: 'not_ready', message: 'not ready: storage' } });
  });

  it('GET /api/v1/status has version, uptime and counts', async () => {
    await create();
    const r = await d.api('GET', '/api/v1/status');
    expect(r.status).toBe(200);
    expect(r.json.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.json.uptime_seconds).toBeGreaterThanOrEqual(0);
    expect(r.json.sandboxes.total).toBeGreaterThanOrEqual(1);
    expect(r.json.sandboxes.active).toBeGreaterThanOrEqual(1);
    expect(r.json.intents).toMatchObject({ running: 0, in_flight: 0 });
    expect(r.json.token_kid).toBe('test-key-1');
    expect(r.json.egress_url).toBe(egress.url);
  });

  it('the metrics listener serves the contract metrics and process metrics as text', async () => {
    expect(d.agentd.metrics.port).toBeGreaterThan(0);
    expect(d.agentd.metrics.port).not.toBe(d.agentd.http.port);
    expect(d.agentd.metrics.url).toBe(`http://127.0.0.1:${d.agentd.metrics.port}/metrics`);
    const r = await fetch(d.agentd.metrics.url);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await r.text();
    for (const m of [
      METRICS.intentsTotal,
      METRICS.intentDurationSeconds,
      METRICS.sandboxesActive,
      METRICS.egressRequestsTotal,
      METRICS.httpRequestsTotal,
      METRICS.storagePurgedRowsTotal,
    ]) {
      expect(text).toContain(`# TYPE ${m.name} `);
    }
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).toMatch(/agentd_sandboxes_active [1-9]/);
    expect(text).toContain('agentd_intents_total{capability="http_fetch",outcome="ok"}');
    expect(text).toContain('agentd_storage_purged_rows_total{table="intents"}');
    expect(text).toMatch(/agentd_http_requests_total\{route="\/api\/v1\/sandboxes",method="POST",status="201"\} [1-9]/);
  });

  it('the metrics listener serves nothing else (404 JSON); the API port has no /metrics', async () => {
    const base = d.agentd.metrics.url.replace(/\/metrics$/, '');
    for (const [method, p] of [
      ['GET', '/'],
      ['GET', '/api/v1/status'],
      ['GET', '/health'],
      ['POST', '/metrics'],
      ['GET', '/metricsx'],
    ] as const) {
      const r = await fetch(`${base}${p}`, { method });
      expect(r.status, `${method} ${p}`).toBe(404);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      expect(((await r.json()) as any).error.code).toBe('not_found');
    }
    expectError(await d.api('GET', '/metrics'), 404, 'not_found');
  });

  it('GET /openapi.json is generated from the route schemas', async () => {
    const r = await d.api('GET', OPENAPI_PATH);
    expect(r.status).toBe(200);
    expect(r.json.openapi).toMatch(/^3\./);
    expect(Object.keys(r.json.paths)).toEqual(
      expect.arrayContaining(['/health', '/ready', '/api/v1/status', '/api/v1/sandboxes', '/api/v1/sandboxes/{id}', '/api/v1/sandboxes/{id}/intents']),
    );
    expect(Object.keys(r.json.paths)).not.toContain('/metrics');
    const create = r.json.paths['/api/v1/sandboxes'].post;
    const body = create.requestBody.content['application/json'].schema;
    expect(body.properties.tier.enum).toEqual(['default', 'restricted', 'standard', 'premium', 'admin']);
    expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(['201', '400', '401', '403', '429']));
    expect(r.json.components.schemas.Sandbox.required).toContain('owner');
    expect(Object.keys(r.json.paths['/api/v1/sandboxes/{id}/intents'].post.responses)).toEqual(
      expect.arrayContaining(['200', '400', '404', '409', '502', '504']),
    );
    expect(Object.keys(r.json.components.schemas)).toEqual(expect.arrayContaining(['Error', 'Sandbox', 'Intent', 'IntentResult']));
  });

  it('unknown routes, bad JSON and other media types are JSON errors', async () => {
    expectError(await d.api('GET', '/nope'), 404, 'not_found');
    expectError(await d.api('POST', '/api/v1/sandboxes', '{"tier":'), 400, 'invalid_argument', 'body');
    expectError(await d.api('POST', '/api/v1/sandboxes', 'tier=default', { 'content-type': 'text/plain' }), 415, 'unsupported_media_type');
    expectError(await d.api('POST', '/api/v1/sandboxes', 'x'.repeat(3 * 1024 * 1024)), 413, 'payload_too_large');
  });

  it('malformed query strings and paths are 400 JSON invalid_argument on every route, never plain text', async () => {
    const cases: [string, string][] = [
      ['/api/v1/sandboxes?limit=1;x', 'limit'],
      ['/api/v1/sandboxes?%zz', 'query'],
      ['/api/v1/sandboxes?state=%', 'query'],
      ['/api/v1/sandboxes?state=%E0%A4%A', 'query'],
      ['/api/v1/sandboxes?limit=1&limit=2', 'limit'],
      ['/api/v1/sandboxes?cursor[]=1', 'cursor[]'],
      ['/api/v1/status?%zz', 'query'],
      ['/api/v1/status?verbose=1', 'verbose'],
      [`/api/v1/sandboxes/${NO_SUCH}?x=%`, 'query'],
      [`/api/v1/sandboxes/${NO_SUCH}/intents?limit=1;x`, 'limit'],
      ['/health?%zz', 'query'],
      ['/ready?state=%', 'query'],
      ['/api/v1/sandboxes/%zz', 'path'],
      ['/api/v1/sandboxes/%', 'path'],
      ['/%E0%A4%A', 'path'],
    ];
    for (const [url, field] of cases) {
      const r = await d.api('GET', url);
      expect.soft(r.status, url).toBe(400);
      expectError(r, 400, 'invalid_argument');
      expect(r.json.error.field, url).toBe(field);
    }
    // The daemon is still fine.
    expect((await d.api('GET', '/health')).status).toBe(200);
  });

  it('a request that is not HTTP at all gets a JSON 400 before the connection closes', async () => {
    const net = await import('node:net');
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.connect(d.agentd.http.port, '127.0.0.1', () => s.write('GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n'));
      let buf = '';
      s.on('data', (c) => (buf += c.toString('utf8')));
      s.on('close', () => resolve(buf));
      s.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toMatch(/content-type: application\/json/i);
    expect(JSON.parse(answer.split('\r\n\r\n')[1] as string)).toEqual({ error: { code: 'invalid_argument', message: 'malformed HTTP request' } });
  });

  it('echoes x-request-id from Envoy, or makes one', async () => {
    const a = await d.api('GET', '/api/v1/status', undefined, { [REQUEST_ID_HEADER]: 'req-from-envoy-123' });
    expect(a.headers.get(REQUEST_ID_HEADER)).toBe('req-from-envoy-123');
    const b = await d.api('GET', '/health');
    expect(b.headers.get(REQUEST_ID_HEADER)).toMatch(/^[0-9a-f-]{36}$/);
    const c = await d.api('GET', '/health', undefined, { [REQUEST_ID_HEADER]: 'bad id with spaces' });
    expect(c.headers.get(REQUEST_ID_HEADER)).not.toBe('bad id with spaces');
    expect(d.logs.some((l) => l.includes('"reqId":"req-from-envoy-123"'))).toBe(true);
  });
});

describe('sandboxes', () => {
  it('POST creates: 201 with id, tier, labels, times and a token', async () => {
    const before = Date.now();
    const r = await d.api('POST', '/api/v1/sandboxes', { tier: 'premium', labels: { team: 'a', 'app.kubernetes.io/name': 'x' }, ttl_seconds: 120 });
    expect(r.status).toBe(201);
    expect(r.json).toMatchObject({ tier: 'premium', labels: { team: 'a', 'app.kubernetes.io/name': 'x' }, state: 'active', terminated_at: null });
    expect(r.json.id).toMatch(/^sbx_[0-9a-f]{24}$/);
    expect(r.headers.get('location')).toBe(`/api/v1/sandboxes/${r.json.id}`);
    const created = Date.parse(r.json.created_at);
    expect(created).toBeGreaterThanOrEqual(before - 5);
    expect(Date.parse(r.json.expires_at) - created).toBe(120_000);
    expect(r.json.token.split('.')).toHaveLength(3);
  });

  it('POST uses the default TTL when none is given', async () => {
    const s = await create({ tier: 'default' });
    expect(Date.parse(s.expires_at) - Date.parse(s.created_at)).toBe(3600_000);
    expect(s.labels).toEqual({});
  });

  it('POST rejects bad input naming the field', async () => {
    const cases: [object, string][] = [
      [{}, 'tier'],
      [{ tier: 'gold' }, 'tier'],
      [{ tier: 5 }, 'tier'],
      [{ tier: 'default', ttl_seconds: 0 }, 'ttl_seconds'],
      [{ tier: 'default', ttl_seconds: 86_401 }, 'ttl_seconds'],
      [{ tier: 'default', ttl_seconds: '60' }, 'ttl_seconds'],
      [{ tier: 'default', ttl_seconds: 1.5 }, 'ttl_seconds'],
      [{ tier: 'default', labels: { a: 1 } }, 'labels.a'],
      [{ tier: 'default', labels: { 'bad key!': 'x' } }, 'labels.bad key!'],
      [{ tier: 'default', labels: 'x' }, 'labels'],
      [{ tier: 'default', ttl_second: 5 }, 'ttl_second'],
    ];
    for (const [body, field] of cases) {
      const r = await d.api('POST', '/api/v1/sandboxes', body);
      expectError(r, 400, 'invalid_argument', field);
    }
    expectError(await d.api('POST', '/api/v1/sandboxes', [1, 2]), 400, 'invalid_argument', 'body');
  });

  it('GET lists with filters and pagination', async () => {
    const a = await create({ tier: 'restricted', labels: { n: '1' } });
    const b = await create({ tier: 'restricted', labels: { n: '2' } });
    const c = await create({ tier: 'restricted', labels: { n: '3' } });
    await d.api('DELETE', `/api/v1/sandboxes/${b.id}`);

    const all = await d.api('GET', '/api/v1/sandboxes?tier=restricted');
    expect(all.status).toBe(200);
    expect(all.json.sandboxes.map((s: any) => s.id)).toEqual([a.id, b.id, c.id]);
    expect(all.json.next_cursor).toBeNull();
    expect(all.json.sandboxes[0].token).toBeUndefined();

    const p1 = await d.api('GET', '/api/v1/sandboxes?tier=restricted&limit=2');
    expect(p1.json.sandboxes.map((s: any) => s.id)).toEqual([a.id, b.id]);
    expect(typeof p1.json.next_cursor).toBe('string');
    const p2 = await d.api('GET', `/api/v1/sandboxes?tier=restricted&limit=2&cursor=${p1.json.next_cursor}`);
    expect(p2.json.sandboxes.map((s: any) => s.id)).toEqual([c.id]);
    expect(p2.json.next_cursor).toBeNull();

    const active = await d.api('GET', '/api/v1/sandboxes?tier=restricted&state=active');
    expect(active.json.sandboxes.map((s: any) => s.id)).toEqual([a.id, c.id]);
    const terminated = await d.api('GET', '/api/v1/sandboxes?tier=restricted&state=terminated');
    expect(terminated.json.sandboxes.map((s: any) => s.id)).toEqual([b.id]);
  });

  it('GET list rejects bad query parameters naming them', async () => {
    expectError(await d.api('GET', '/api/v1/sandboxes?limit=0'), 400, 'invalid_argument', 'limit');
    expectError(await d.api('GET', '/api/v1/sandboxes?limit=abc'), 400, 'invalid_argument', 'limit');
    expectError(await d.api('GET', '/api/v1/sandboxes?limit=1001'), 400, 'invalid_argument', 'limit');
    expectError(await d.api('GET', '/api/v1/sandboxes?state=zombie'), 400, 'invalid_argument', 'state');
    expectError(await d.api('GET', '/api/v1/sandboxes?cursor=xyz'), 400, 'invalid_argument', 'cursor');
    expectError(await d.api('GET', '/api/v1/sandboxes?colour=red'), 400, 'invalid_argument', 'colour');
  });

  it('GET /:id returns one; 404 when unknown; 400 for a malformed id', async () => {
    const s = await create({ tier: 'standard', labels: { k: 'v' } });
    const r = await d.api('GET', `/api/v1/sandboxes/${s.id}`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      id: s.id,
      owner: 'local-admin',
      tier: 'standard',
      labels: { k: 'v' },
      state: 'active',
      created_at: s.created_at,
      expires_at: s.expires_at,
      terminated_at: null,
    });
    expectError(await d.api('GET', `/api/v1/sandboxes/${NO_SUCH}`), 404, 'sandbox_not_found');
    expectError(await d.api('GET', '/api/v1/sandboxes/not-an-id'), 400, 'invalid_argument', 'id');
  });

  it('DELETE terminates; again is 409; unknown is 404', async () => {
    const s = await create();
    const r = await d.api('DELETE', `/api/v1/sandboxes/${s.id}`);
    expect(r.status).toBe(200);
    expect(r.json.state).toBe('terminated');
    expect(Date.parse(r.json.terminated_at)).toBeGreaterThan(0);
    expect((await d.api('GET', `/api/v1/sandboxes/${s.id}`)).json.state).toBe('terminated');
    expectError(await d.api('DELETE', `/api/v1/sandboxes/${s.id}`), 409, 'sandbox_terminated');
    expectError(await d.api('DELETE', `/api/v1/sandboxes/${NO_SUCH}`), 404, 'sandbox_not_found');
    expectError(await d.api('DELETE', '/api/v1/sandboxes/sbx_XYZ'), 400, 'invalid_argument', 'id');
  });
});

describe('intents', () => {
  const fetchBody = { capability: 'http_fetch', params: { service: 'openai', method: 'GET', path: '/v1/models' } };

  it('POST executes and GET lists the history', async () => {
    const s = await create();
    const r = await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchBody);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      sandbox_id: s.id,
      capability: 'http_fetch',
      status: 200,
      outcome: 'ok',
      body: '{"ok":true}',
      body_encoding: 'utf8',
      truncated: false,
    });
    expect(r.json.id).toMatch(/^int_[0-9a-f]{24}$/);
    expect(r.json.duration_ms).toBeGreaterThanOrEqual(0);
    expect(r.json.headers['content-type']).toBe('application/json');

    const h = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.status).toBe(200);
    expect(h.json.intents).toHaveLength(1);
    expect(h.json.intents[0]).toMatchObject({
      id: r.json.id,
      service: 'openai',
      method: 'GET',
      path: '/v1/models',
      outcome: 'ok',
      status: 200,
      body_bytes: 11,
    });
    expect(h.json.intents[0].body).toBeUndefined();
    expect(h.json.next_cursor).toBeNull();
  });

  it('GET history paginates and rejects bad queries', async () => {
    const s = await create();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchBody)).json.id);
    const p1 = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents?limit=2`);
    expect(p1.json.intents.map((i: any) => i.id)).toEqual(ids.slice(0, 2));
    const p2 = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents?limit=2&cursor=${p1.json.next_cursor}`);
    expect(p2.json.intents.map((i: any) => i.id)).toEqual(ids.slice(2));
    expectError(await d.api('GET', `/api/v1/sandboxes/${s.id}/intents?limit=-1`), 400, 'invalid_argument', 'limit');
    expectError(await d.api('GET', `/api/v1/sandboxes/${NO_SUCH}/intents`), 404, 'sandbox_not_found');
    expectError(await d.api('GET', '/api/v1/sandboxes/nope/intents'), 400, 'invalid_argument', 'id');
  });

  it('POST rejects bad input naming the field', async () => {
    const s = await create();
    const url = `/api/v1/sandboxes/${s.id}/intents`;
    const p = fetchBody.params;
    const cases: [object, string][] = [
      [{ params: p }, 'capability'],
      [{ capability: 'shell', params: p }, 'capability'],
      [{ capability: 'http_fetch' }, 'params'],
      [{ capability: 'http_fetch', params: { ...p, service: undefined } }, 'params.service'],
      [{ capability: 'http_fetch', params: { ...p, service: 'Open AI' } }, 'params.service'],
      [{ capability: 'http_fetch', params: { ...p, method: 'CONNECT' } }, 'params.method'],
      [{ capability: 'http_fetch', params: { ...p, method: 'get' } }, 'params.method'],
      [{ capability: 'http_fetch', params: { ...p, path: 'v1/models' } }, 'params.path'],
      [{ capability: 'http_fetch', params: { ...p, path: 'https://evil.example/' } }, 'params.path'],
      [{ capability: 'http_fetch', params: { ...p, path: '//evil.example/x' } }, 'params.path'],
      [{ capability: 'http_fetch', params: { ...p, path: '/a b' } }, 'params.path'],
      [{ capability: 'http_fetch', params: { ...p, path: '/a#frag' } }, 'params.path'],
      [{ capability: 'http_fetch', params: { ...p, timeout_ms: 0 } }, 'params.timeout_ms'],
      [{ capability: 'http_fetch', params: { ...p, timeout_ms: 120_001 } }, 'params.timeout_ms'],
      [{ capability: 'http_fetch', params: { ...p, body: 'x' } }, 'params.body'],
      [{ capability: 'http_fetch', params: { ...p, headers: { Authorization: 'Bearer sk-123' } } }, 'params.headers.Authorization'],
      [{ capability: 'http_fetch', params: { ...p, headers: { cookie: 'a=b' } } }, 'params.headers.cookie'],
      [{ capability: 'http_fetch', params: { ...p, headers: { Host: 'evil' } } }, 'params.headers.Host'],
      [{ capability: 'http_fetch', params: { ...p, headers: { 'x-agentd-sandbox-token': 't' } } }, 'params.headers.x-agentd-sandbox-token'],
      [{ capability: 'http_fetch', params: { ...p, headers: { 'X-Forwarded-For': '1.2.3.4' } } }, 'params.headers.X-Forwarded-For'],
      [{ capability: 'http_fetch', params: { ...p, headers: { 'proxy-authorization': 'x' } } }, 'params.headers.proxy-authorization'],
      [{ capability: 'http_fetch', params: { ...p, headers: { 'x-sandbox-id': 'x' } } }, 'params.headers.x-sandbox-id'],
      [{ capability: 'http_fetch', params: { ...p, headers: { accept: 'a\r\nx-evil: 1' } } }, 'params.headers.accept'],
      [{ capability: 'http_fetch', params: { ...p, headers: { 'bad name': '1' } } }, 'params.headers.bad name'],
      [{ capability: 'http_fetch', params: { ...p, headers: { accept: 1 } } }, 'params.headers.accept'],
      [{ capability: 'http_fetch', params: { ...p, extra: 1 } }, 'params.extra'],
    ];
    for (const [body, field] of cases) {
      const r = await d.api('POST', url, body);
      expect.soft(r.json?.error?.field, JSON.stringify(body)).toBe(field);
      expectError(r, 400, 'invalid_argument', field);
    }
    // CR/LF in a header name (JSON allows it; HTTP would not).
    expectError(await d.api('POST', url, { capability: 'http_fetch', params: { ...p, headers: { 'x\r\ny': '1' } } }), 400, 'invalid_argument');
    expect(egress.requests.filter((r) => r.url === '/a b' || r.headers.cookie !== undefined)).toHaveLength(0);
  });

  it('POST for an unknown sandbox is 404; for a terminated one 409', async () => {
    expectError(await d.api('POST', `/api/v1/sandboxes/${NO_SUCH}/intents`, fetchBody), 404, 'sandbox_not_found');
    const s = await create();
    await d.api('DELETE', `/api/v1/sandboxes/${s.id}`);
    const before = egress.requests.length;
    expectError(await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchBody), 409, 'sandbox_not_active');
    expect(egress.requests.length).toBe(before);
  });

  it('an expired sandbox is not active: 409, listed as expired, and can still be terminated', async () => {
    const s = await create({ tier: 'default', ttl_seconds: 1 });
    await new Promise((r) => setTimeout(r, 1100));
    expect((await d.api('GET', `/api/v1/sandboxes/${s.id}`)).json.state).toBe('expired');
    expectError(await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchBody), 409, 'sandbox_not_active');
    const expired = await d.api('GET', '/api/v1/sandboxes?state=expired');
    expect(expired.json.sandboxes.map((x: any) => x.id)).toContain(s.id);
    const t = await d.api('DELETE', `/api/v1/sandboxes/${s.id}`);
    expect(t.status).toBe(200);
    expect(t.json.state).toBe('terminated');
  });
});

describe('logs', () => {
  it('are JSON and never contain tokens or credentials', async () => {
    const s = await create();
    await d.api(
      'POST',
      `/api/v1/sandboxes/${s.id}/intents`,
      { capability: 'http_fetch', params: { service: 'openai', method: 'GET', path: '/v1/models?api_key=querysecret' } },
      {
        authorization: 'Bearer caller-secret-abc',
        cookie: 'session=cookie-secret',
      },
    );
    await d.api('GET', '/health', undefined, { [SANDBOX_TOKEN_HEADER]: s.token });
    expect(d.logs.length).toBeGreaterThan(5);
    for (const line of d.logs) {
      expect(() => JSON.parse(line)).not.toThrow();
      expect(line).not.toContain(s.token);
      expect(line).not.toContain(s.token.split('.')[2]);
      expect(line).not.toContain('caller-secret-abc');
      expect(line).not.toContain('cookie-secret');
      expect(line).not.toContain('querysecret');
      expect(line).not.toContain(d.env.jwks.keys[0]!.k);
    }
    const intentLog = d.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'intent completed' && l.sandbox_id === s.id);
    expect(intentLog).toMatchObject({ service: 'openai', method: 'GET', path: '/v1/models', status: 200, outcome: 'ok' });
  });
});

describe('draining', () => {
  it('/ready turns 503 and new intents are refused; other requests are still served', async () => {
    const x = await startInProcess({ AGENTD_EGRESS_URL: egress.url });
    const s = (await x.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    x.agentd.service.beginDrain();
    const ready = await x.api('GET', '/ready');
    expect(ready.status).toBe(503);
    expect(ready.json).toEqual({
      status: 'not_ready',
      checks: { storage: true, draining: true },
      error: { code: 'not_ready', message: 'not ready: draining' },
    });
    expect(ready.headers.get('connection')).toBe('close');
    expect((await x.api('GET', '/health')).status).toBe(200);
    expect((await x.api('GET', `/api/v1/sandboxes/${s.id}`)).status).toBe(200);
    const r = await x.api('POST', `/api/v1/sandboxes/${s.id}/intents`, { capability: 'http_fetch', params: { service: 'openai', method: 'GET', path: '/' } });
    expectError(r, 503, 'shutting_down');
  });
});
