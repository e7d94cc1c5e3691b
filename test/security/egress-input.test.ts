// Hostile input at the egress proxy: Host spoofing, absolute-form request targets, CONNECT and
// upgrades, paths outside the allowlists, CRLF and framing tricks (raw, and through agentd's
// http_fetch), and sandbox tokens forged, expired, altered, unsigned, mis-keyed or carried the
// wrong way. What reaches the stand-in upstream is checked as well as what the sandbox is told.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { SignJWT, exportJWK } from 'jose';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { AgentdGrpc, egressCall, mintToken, rawRequest, secretsFoundIn } from '../../scripts/local/clients.ts';
import { SANDBOX_TOKEN_HEADER, TOKEN_AUDIENCE, TOKEN_ISSUER } from '../../agentd/src/contract.ts';
import { matchPath, normalizePath } from '../../policy/paths.ts';
import { CaseBook, errorCode, h2Send, policyVariant, rawExchange, scanStack, secretsOf } from './support.ts';

const book = new CaseBook('egress-input');
// The shipped policy; the restricted tier gets a larger budget here (rate limits are the load
// suite's subject; this file sends many allowed requests per sandbox).
const spec = policyVariant((d) => {
  d.sandboxTiers.tiers.restricted.requests_per_minute = 1000;
});
let stack: Stack;
let rpc: AgentdGrpc;
const tokens: string[] = [];
interface Sbx {
  id: string;
  token: string;
}
let restricted: Sbx;
let standard: Sbx;
let admin: Sbx;

const api = (method: string, path: string, body?: object) =>
  rawRequest(stack.ports.gateway, {
    method,
    path,
    headers: { 'x-api-key': stack.apiKeys['admin']!, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
async function sandbox(tier: string): Promise<Sbx> {
  const r = await api('POST', '/api/v1/sandboxes', { tier });
  expect(r.status, r.body).toBe(201);
  const s = r.json();
  tokens.push(s.token);
  return s;
}

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-sec-eg-')) });
  rpc = new AgentdGrpc(stack.gatewayGrpc);
  restricted = await sandbox('restricted');
  standard = await sandbox('standard');
  admin = await sandbox('admin');
});
afterAll(async () => {
  try {
    rpc?.close();
    await stack?.stop();
  } finally {
    book.flush();
  }
});

const E = () => stack.ports.egress;
const raw = (text: string | Buffer, waitMs = 3000) => rawExchange(E(), text, { waitMs });
const received = () => stack.upstream.received;
/** Whether the policy allows this path for the service (the policy's own normaliser and matcher). */
function allowedBy(service: string, path: string): boolean {
  const n = normalizePath(path);
  return n.ok && spec.egressServices[service]!.allowedPaths.some((p) => matchPath(p, n.segments));
}
function expectRefusal(status: number, body: string, want: { status?: number | number[]; code?: string | string[] } = {}) {
  expect(status, body).toBeGreaterThanOrEqual(400);
  if (want.status !== undefined) expect([want.status].flat(), body).toContain(status);
  const code = errorCode(body);
  expect(code, `JSON error body expected, got: ${body.slice(0, 200)}`).toBeTruthy();
  if (want.code !== undefined) expect([want.code].flat(), body).toContain(code);
}

// ---- Host spoofing --------------------------------------------------------------------------

const HOSTS: [host: string, expect: 'unknown' | 'httpbin'][] = [
  ['evil.example.com', 'unknown'],
  ['httpbin.evil.example.com', 'unknown'],
  ['evil.example.com:443', 'unknown'],
  ['httpbin.', 'unknown'],
  ['httpbin@evil.example.com', 'unknown'],
  ['evil.example.com@httpbin', 'unknown'],
  ['httpbin.org', 'unknown'],
  ['api.openai.com', 'unknown'],
  ['127.0.0.1', 'unknown'],
  ['localhost', 'unknown'],
  ['169.254.169.254', 'unknown'],
  ['envoy_admin', 'unknown'],
  ['service_httpbin', 'unknown'],
  ['opa', 'unknown'],
  ['agentd', 'unknown'],
  ['', 'unknown'],
  ['*', 'unknown'],
  ['HTTPBIN', 'httpbin'],
  ['httpbin:443', 'httpbin'],
];

describe('Host spoofing toward unknown services', () => {
  for (const [host, want] of HOSTS) {
    book.case('egress-input', `host: ${JSON.stringify(host)} -> ${want === 'unknown' ? '404 unknown_service, nothing sent' : 'httpbin itself'}`, async () => {
      stack.upstream.clear();
      const r = await egressCall(E(), host, admin.token, { path: '/get' });
      if (want === 'unknown') {
        expectRefusal(r.status, r.body, { status: 404, code: 'unknown_service' });
        expect(received()).toEqual([]);
      } else {
        expect(r.status, r.body).toBe(200);
        expect(received()).toHaveLength(1);
        // httpbin carries no credential (it echoes headers): routed to it, and no service's credential went along.
        expect(received()[0]!.headers['authorization']).toBeUndefined();
        expect(secretsFoundIn(JSON.stringify(received()[0]!.headers), stack.credentials)).toEqual([]);
      }
    });
  }
  book.case('egress-input', `host: upstream's own address (localhost:<stand-in port>) -> 404, nothing sent`, async () => {
    stack.upstream.clear();
    const r = await egressCall(E(), `localhost:${stack.upstream.port}`, admin.token, { path: '/get' });
    // "localhost:<port>" is not a service id: Host names a service, never an address.
    expectRefusal(r.status, r.body, { status: 404, code: 'unknown_service' });
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'host: two Host headers (httpbin, openai) -> refused, nothing sent', async () => {
    stack.upstream.clear();
    const r = await raw(`GET /get HTTP/1.1\r\nHost: httpbin\r\nHost: openai\r\n${SANDBOX_TOKEN_HEADER}: ${admin.token}\r\nConnection: close\r\n\r\n`);
    expectRefusal(r.status, r.body);
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'host: HTTP/2 :authority of an unknown service -> 404, nothing sent', async () => {
    stack.upstream.clear();
    const r = await h2Send(E(), { path: '/get', headers: { ':authority': 'evil.example.com', [SANDBOX_TOKEN_HEADER]: admin.token } });
    expectRefusal(r.status, r.body, { status: 404, code: 'unknown_service' });
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'host: HTTP/2 :authority httpbin with a host header "openai": routed and decided as one service', async () => {
    stack.upstream.clear();
    const r = await h2Send(E(), {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { ':authority': 'httpbin', host: 'openai', [SANDBOX_TOKEN_HEADER]: restricted.token },
    });
    // Whatever the proxy takes as the service, a restricted sandbox may not call openai and
    // httpbin has no such path: refused either way.
    expectRefusal(r.status, r.body, { status: [400, 403, 404] });
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'host: X-Forwarded-Host / Forwarded naming another service change nothing', async () => {
    stack.upstream.clear();
    const r = await egressCall(E(), 'httpbin', restricted.token, {
      path: '/get',
      headers: { 'x-forwarded-host': 'openai', forwarded: 'host=openai', 'x-original-host': 'openai', 'x-host': 'openai' },
    });
    expect(r.status).toBe(200);
    // httpbin carries no credential (it echoes headers): routed to it, and no service's credential went along.
    expect(received()[0]!.headers['authorization']).toBeUndefined();
    expect(secretsFoundIn(JSON.stringify(received()[0]!.headers), stack.credentials)).toEqual([]);
  });
});

// ---- absolute-form, CONNECT, upgrades -------------------------------------------------------------

describe('absolute-form request targets, CONNECT and upgrades', () => {
  const line = (target: string, host: string, token: string, method = 'GET') =>
    `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\n${SANDBOX_TOKEN_HEADER}: ${token}\r\nConnection: close\r\n\r\n`;
  const ABS: [name: string, req: () => string, check: (r: Awaited<ReturnType<typeof raw>>) => void][] = [
    [
      'GET http://evil.example/get with Host: httpbin',
      () => line('http://evil.example/get', 'httpbin', admin.token),
      (r) => expectRefusal(r.status, r.body, { status: 404, code: 'unknown_service' }),
    ],
    [
      'GET http://169.254.169.254/latest/meta-data with Host: httpbin',
      () => line('http://169.254.169.254/latest/meta-data', 'httpbin', admin.token),
      (r) => expectRefusal(r.status, r.body, { status: 404, code: 'unknown_service' }),
    ],
    [
      'GET http://openai/v1/models with Host: httpbin (restricted)',
      () => line('http://openai/v1/models', 'httpbin', restricted.token),
      (r) => expectRefusal(r.status, r.body, { status: 403, code: 'service_not_allowed' }),
    ],
    [
      'GET https://httpbin/get on the plaintext listener',
      () => line('https://httpbin/get', 'evil.example', restricted.token),
      (r) => expectRefusal(r.status, r.body, { status: [400, 403] }),
    ],
    [
      'GET http://httpbin@evil.example/get',
      () => line('http://httpbin@evil.example/get', 'httpbin', admin.token),
      (r) => expectRefusal(r.status, r.body, { status: [400, 404] }),
    ],
    [
      'GET //evil.example/get (network-path reference)',
      () => line('//evil.example/get', 'httpbin', admin.token),
      (r) => expectRefusal(r.status, r.body, { status: 403, code: 'path_not_allowed' }),
    ],
  ];
  for (const [name, req, check] of ABS) {
    book.case('egress-input', `absolute-form: ${name} -> refused, nothing sent`, async () => {
      stack.upstream.clear();
      check(await raw(req()));
      expect(received()).toEqual([]);
    });
  }
  book.case(
    'egress-input',
    'absolute-form: GET http://httpbin/get with Host: evil -> the URI names the service, and policy, route and credential agree on it',
    async () => {
      stack.upstream.clear();
      const r = await raw(line('http://httpbin/get', 'evil.example', restricted.token));
      expect(r.status, r.text).toBe(200);
      expect(received()).toHaveLength(1);
      expect(received()[0]!.path).toBe('/get');
      // httpbin carries no credential (it echoes headers): routed to it, and no service's credential went along.
      expect(received()[0]!.headers['authorization']).toBeUndefined();
      expect(secretsFoundIn(JSON.stringify(received()[0]!.headers), stack.credentials)).toEqual([]);
    },
  );
  for (const [name, target, host] of [
    ['CONNECT openai:443', 'openai:443', 'openai:443'],
    ['CONNECT httpbin:443', 'httpbin:443', 'httpbin:443'],
    ['CONNECT evil.example:443', 'evil.example:443', 'evil.example:443'],
    ['CONNECT to the stand-in address', '127.0.0.1:{port}', '127.0.0.1:{port}'],
  ] as const) {
    book.case('egress-input', `CONNECT: ${name} -> no tunnel`, async () => {
      stack.upstream.clear();
      const port = String(stack.upstream.port);
      const r = await raw(
        `CONNECT ${target.replace('{port}', port)} HTTP/1.1\r\nHost: ${host.replace('{port}', port)}\r\n${SANDBOX_TOKEN_HEADER}: ${admin.token}\r\n\r\n\x16\x03\x01\x00\x05hello`,
        2000,
      );
      expect(r.text).not.toMatch(/^HTTP\/1\.1 2\d\d/);
      expect(received()).toEqual([]);
    });
  }
  book.case('egress-input', 'CONNECT over HTTP/2 -> no tunnel', async () => {
    stack.upstream.clear();
    const r = await h2Send(E(), {
      method: 'CONNECT',
      path: undefined as never,
      headers: { ':authority': 'httpbin:443', [SANDBOX_TOKEN_HEADER]: admin.token } as never,
      timeoutMs: 2000,
    });
    expect(r.status === 0 || r.status >= 400, JSON.stringify(r)).toBe(true);
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'upgrade: WebSocket upgrade to an allowed path is not switched', async () => {
    stack.upstream.clear();
    const r = await raw(
      `GET /get HTTP/1.1\r\nHost: httpbin\r\n${SANDBOX_TOKEN_HEADER}: ${restricted.token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      2000,
    );
    expect(r.status).not.toBe(101);
    for (const q of received()) expect(q.headers['upgrade']).toBeUndefined();
  });
});

// ---- paths outside the allowlists ------------------------------------------------------------------

const PATHS: [service: string, method: string, path: string, refused?: 'refused'][] = [
  ['httpbin', 'GET', '/get/../delete'],
  ['httpbin', 'GET', '/anything/../admin'],
  ['httpbin', 'GET', '/anything/%2e%2e/admin'],
  ['httpbin', 'GET', '/anything/%2E%2E/%2E%2E/admin'],
  ['httpbin', 'GET', '/anything/.%2e/admin'],
  ['httpbin', 'GET', '/anything%2f..%2fadmin'],
  ['httpbin', 'GET', '/anything%2F..%2Fadmin'],
  ['httpbin', 'GET', '/anything%5c..%5cadmin'],
  ['httpbin', 'GET', '/anything\\..\\..\\admin'],
  ['httpbin', 'GET', '/status/200/../../delete'],
  ['httpbin', 'GET', '/get.'],
  ['httpbin', 'GET', '/get%2e'],
  ['httpbin', 'GET', '/GET'],
  ['httpbin', 'GET', '/Anything/x'],
  // "..;" is a plain segment to the policy, but Envoy resolves it like ".." first: /admin.
  ['httpbin', 'GET', '/anything/..;/admin', 'refused'],
  ['httpbin', 'GET', '/get;/../admin'],
  ['httpbin', 'GET', '/get%3f/../admin'],
  ['httpbin', 'GET', '/get%23/../../admin'],
  ['httpbin', 'GET', '/anything/a%00b'],
  ['httpbin', 'GET', '/anything/a%0d%0aHost:%20evil'],
  ['httpbin', 'GET', '/status/'],
  ['httpbin', 'GET', '/status/200/extra'],
  ['httpbin', 'GET', '/?/get'],
  ['httpbin', 'GET', '/x?/anything/y'],
  ['openai', 'POST', '/v1/chat/completions/../../files'],
  ['openai', 'POST', '/v1/chat/completions/%2e%2e/%2e%2e/files'],
  ['openai', 'GET', '/v1/models/%2e%2e'],
  ['openai', 'GET', '/v1/models/..%2f..%2ffiles'],
  ['openai', 'GET', '/v1/models/gpt%2f..%2f..%2ffiles'],
  ['openai', 'POST', '/v1/chat/completions%3f/../files'],
  ['openai', 'POST', '/v1/files#/v1/chat/completions'],
  ['openai', 'GET', '/v1/models/a/b'],
  ['github', 'GET', '/repos/../admin'],
  ['github', 'GET', '/reposx/o/r'],
  ['github', 'DELETE', '/repos/o/r'],
  ['github', 'PUT', '/repos/o/r'],
  // Tricks that normalise to an allowed path: allowed, and the upstream gets that path.
  ['httpbin', 'GET', '//get'],
  ['httpbin', 'GET', '/anything/./x'],
  ['httpbin', 'GET', '/anything/x/../y'],
  ['httpbin', 'GET', '/status/%32%30%30'],
  ['httpbin', 'GET', '/get?x=/anything/../../admin'],
  ['httpbin', 'GET', '/anything/%252e%252e/x'],
  ['openai', 'POST', '/v1/chat//completions'],
  ['github', 'GET', '/repos/o/r/../../repos/p/q'],
];

describe('paths outside the allowlists (admin-tier sandbox: every service allowed)', () => {
  for (const [service, method, path, refused] of PATHS) {
    const want = !refused && /^(GET|POST)$/.test(method) && allowedBy(service, path) && !/%(2f|5c)|\\|#|%00|%0d/i.test(path) ? 'allowed' : 'refused';
    book.case('egress-input', `path: ${method} ${service}${path} -> ${want}; the upstream only ever sees allowed paths`, async () => {
      stack.upstream.clear();
      const r = await raw(
        `${method} ${path} HTTP/1.1\r\nHost: ${service}\r\n${SANDBOX_TOKEN_HEADER}: ${admin.token}\r\ncontent-length: 0\r\nConnection: close\r\n\r\n`,
      );
      if (want === 'refused') {
        expectRefusal(r.status, r.body, { status: [400, 403] });
        expect(received()).toEqual([]);
      } else {
        expect(r.status, r.text).toBe(200);
      }
      for (const q of received()) {
        expect(allowedBy(service, q.path), q.path).toBe(true);
        // What the upstream decodes once has no dot segments and no empty ones.
        const segs = decodeURIComponent(q.path.split('?')[0]!).split('/').slice(1);
        expect(
          segs.filter((x, i) => x === '.' || x === '..' || (x === '' && i < segs.length - 1)),
          q.path,
        ).toEqual([]);
      }
    });
  }
  book.case('egress-input', 'path: the same tricks through agentd http_fetch are refused by the egress (intent status 403/400)', async () => {
    const tricks = [
      '/get/../delete',
      '/anything/%2e%2e/admin',
      '/anything/..;/admin',
      '/status/200/../../delete',
      '/get%3f/../admin',
      '/anything/a%0d%0aHost:%20evil',
      '/anything%2f..%2fadmin',
    ];
    stack.upstream.clear();
    for (const path of tricks) {
      const r = await api('POST', `/api/v1/sandboxes/${restricted.id}/intents`, {
        capability: 'http_fetch',
        params: { service: 'httpbin', method: 'GET', path },
      });
      expect(r.status, r.body).toBe(200);
      const intent = r.json();
      expect([400, 403], `${path}: ${r.body}`).toContain(intent.status);
      expect(errorCode(intent.body), path).toMatch(/path_not_allowed|invalid_path|bad_request/);
    }
    expect(received()).toEqual([]);
  });
});

// ---- CRLF and framing -------------------------------------------------------------------------

interface FetchCase {
  name: string;
  params: (s: Sbx) => object;
  field?: string;
}
const FETCH_CRLF: FetchCase[] = [
  {
    name: 'CRLF in a header value',
    params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { accept: `x\r\n${SANDBOX_TOKEN_HEADER}: forged` } }),
    field: 'params.headers.accept',
  },
  {
    name: 'LF in a header value',
    params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { accept: 'x\nHost: evil' } }),
    field: 'params.headers.accept',
  },
  {
    name: 'CR in a header value',
    params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { accept: 'x\rHost: evil' } }),
    field: 'params.headers.accept',
  },
  {
    name: 'NUL in a header value',
    params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { accept: 'x\u0000y' } }),
    field: 'params.headers.accept',
  },
  { name: 'CRLF in a header name', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'accept\r\nhost': 'evil' } }) },
  { name: 'colon in a header name', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'accept: x\r\nhost': 'evil' } }) },
  { name: 'CRLF in the path', params: () => ({ service: 'httpbin', method: 'GET', path: '/get HTTP/1.1\r\nHost: evil\r\n\r\nGET /x' }), field: 'params.path' },
  { name: 'space in the path', params: () => ({ service: 'httpbin', method: 'GET', path: '/get HTTP/1.1' }), field: 'params.path' },
  {
    name: 'CRLF in the service (Host)',
    params: () => ({ service: 'httpbin\r\nx-agentd-sandbox-tier: admin', method: 'GET', path: '/get' }),
    field: 'params.service',
  },
  { name: 'CRLF in the method', params: () => ({ service: 'httpbin', method: 'GET /admin HTTP/1.1\r\n', path: '/get' }), field: 'params.method' },
  { name: 'an absolute URL as path', params: () => ({ service: 'httpbin', method: 'GET', path: 'http://evil.example/get' }), field: 'params.path' },
  { name: 'a network-path (//host) as path', params: () => ({ service: 'httpbin', method: 'GET', path: '//evil.example/get' }), field: 'params.path' },
  { name: 'a backslash path', params: () => ({ service: 'httpbin', method: 'GET', path: '/\\evil.example/get' }), field: 'params.path' },
  { name: 'a fragment in the path', params: () => ({ service: 'httpbin', method: 'GET', path: '/get#/admin' }), field: 'params.path' },
  { name: 'a service with a port', params: () => ({ service: 'httpbin:443', method: 'GET', path: '/get' }), field: 'params.service' },
  { name: 'a service with userinfo', params: () => ({ service: 'evil@httpbin', method: 'GET', path: '/get' }), field: 'params.service' },
  { name: 'the sandbox-token header', params: (s) => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { [SANDBOX_TOKEN_HEADER]: s.token } }) },
  {
    name: 'the sandbox-token header in upper case',
    params: (s) => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'X-Agentd-Sandbox-Token': s.token } }),
  },
  { name: 'x-sandbox-tier: admin', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'x-sandbox-tier': 'admin' } }) },
  {
    name: 'x-agentd-sandbox-id',
    params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'x-agentd-sandbox-id': 'sbx_000000000000000000000000' } }),
  },
  { name: 'host: openai', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { host: 'openai' } }) },
  { name: 'authorization', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { authorization: 'Bearer attacker' } }) },
  { name: 'proxy-authorization', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'proxy-authorization': 'Basic eA==' } }) },
  {
    name: 'x-envoy-upstream-rq-timeout-ms',
    params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'x-envoy-upstream-rq-timeout-ms': '1' } }),
  },
  { name: 'x-forwarded-host', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'x-forwarded-host': 'openai' } }) },
  { name: 'forwarded', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { forwarded: 'host=openai' } }) },
  { name: 'x-api-key', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { 'x-api-key': 'attacker' } }) },
  { name: 'cookie', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', headers: { cookie: 'a=b' } }) },
  { name: 'an unknown tier-like field in params', params: () => ({ service: 'httpbin', method: 'GET', path: '/get', tier: 'admin' }), field: 'params.tier' },
];

describe('CRLF, header and routing injection through agentd http_fetch -> 400 invalid_argument, nothing sent', () => {
  for (const c of FETCH_CRLF) {
    book.case('egress-input', `http_fetch: ${c.name} -> 400`, async () => {
      stack.upstream.clear();
      const r = await api('POST', `/api/v1/sandboxes/${restricted.id}/intents`, { capability: 'http_fetch', params: c.params(restricted) });
      expect(r.status, r.body).toBe(400);
      expect(r.json().error.code).toBe('invalid_argument');
      if (c.field) expect(r.json().error.field).toBe(c.field);
      expect(received()).toEqual([]);
    });
  }
  book.case('egress-input', 'http_fetch: a service id that is not a service (httpbin.evil.example) -> egress 404, nothing sent', async () => {
    stack.upstream.clear();
    const r = await api('POST', `/api/v1/sandboxes/${admin.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'httpbin.evil.example', method: 'GET', path: '/get' },
    });
    expect(r.json().status, r.body).toBe(404);
    expect(errorCode(r.json().body)).toBe('unknown_service');
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'http_fetch: over gRPC, CRLF in a header value -> INVALID_ARGUMENT, nothing sent', async () => {
    stack.upstream.clear();
    const r = await rpc.call(
      'ExecuteIntent',
      { sandbox_id: restricted.id, http_fetch: { service: 'httpbin', method: 'GET', path: '/get', headers: { accept: 'x\r\nhost: evil' } } },
      stack.apiKeys['admin'],
    );
    expect(r.ok ? -1 : r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(received()).toEqual([]);
  });
});

describe('CRLF and framing tricks sent raw to the egress', () => {
  const req = (headerLines: string, token = restricted.token, first = 'GET /get HTTP/1.1') =>
    `${first}\r\nHost: httpbin\r\n${SANDBOX_TOKEN_HEADER}: ${token}\r\n${headerLines}Connection: close\r\n\r\n`;
  const RAW: [name: string, data: () => string][] = [
    ['bare CR inside a header value', () => req('X-Foo: a\rHost: evil.example\r\n')],
    ['bare LF splitting a header', () => req('X-Foo: a\nHost: evil.example\r\n')],
    ['obs-fold continuation line', () => req('X-Foo: a\r\n Host: evil.example\r\n')],
    ['NUL in a header value', () => req('X-Foo: a\x00b\r\n')],
    ['space before the colon', () => req('Host : evil.example\r\n')],
    ['header name with a space', () => req('X Foo: y\r\n')],
    ['token header split by bare LF', () => req(`${SANDBOX_TOKEN_HEADER}: x\n${SANDBOX_TOKEN_HEADER}: ${admin.token}\r\n`)],
    ['two content-lengths', () => req('Content-Length: 0\r\nContent-Length: 40\r\n', restricted.token, 'POST /post HTTP/1.1')],
    [
      'content-length with transfer-encoding (smuggling)',
      () =>
        req('Content-Length: 40\r\nTransfer-Encoding: chunked\r\n', restricted.token, 'POST /post HTTP/1.1') +
        '0\r\n\r\nGET /admin HTTP/1.1\r\nHost: openai\r\n\r\n',
    ],
    ['transfer-encoding: chunked, chunked', () => req('Transfer-Encoding: chunked, chunked\r\n', restricted.token, 'POST /post HTTP/1.1') + '0\r\n\r\n'],
    ['transfer-encoding with a trailing space token', () => req('Transfer-Encoding: xchunked\r\n', restricted.token, 'POST /post HTTP/1.1') + '0\r\n\r\n'],
    ['request line with two spaces', () => req('', restricted.token, 'GET  /get  HTTP/1.1')],
    ['request line with a tab', () => req('', restricted.token, 'GET\t/get HTTP/1.1')],
    ['HTTP/0.9-style request', () => 'GET /get\r\n\r\n'],
    ['HTTP/1.0 without Host', () => `GET /get HTTP/1.0\r\n${SANDBOX_TOKEN_HEADER}: ${restricted.token}\r\n\r\n`],
  ];
  for (const [name, data] of RAW) {
    book.case('egress-input', `raw: ${name} -> refused, or served as plain httpbin with nothing injected`, async () => {
      stack.upstream.clear();
      const r = await raw(data());
      if (r.status >= 200 && r.status < 300) {
        // Accepted: it must have been an ordinary httpbin request, with no injected header.
        expect(received().length).toBeLessThanOrEqual(1);
        for (const q of received()) {
          expect(allowedBy('httpbin', q.path), q.path).toBe(true);
          expect(q.headers['host']).toBe(`localhost:${stack.upstream.port}`);
          // httpbin carries no credential: none may appear, of any service.
          expect(q.headers['authorization']).toBeUndefined();
          expect(secretsFoundIn(JSON.stringify(q.headers), stack.credentials)).toEqual([]);
          expect(Object.keys(q.headers).filter((h) => h.startsWith('x-agentd') || h.startsWith('x-sandbox'))).toEqual([]);
          for (const v of Object.values(q.headers)) expect(String(v)).not.toMatch(/[\r\n\0]/);
        }
      } else {
        expect(r.status === 0 || r.status >= 400, r.text).toBe(true);
        expect(received().filter((q) => !allowedBy('httpbin', q.path))).toEqual([]);
      }
      // Never anything the restricted sandbox may not do: no openai, no admin path.
      expect(received().filter((q) => q.path.startsWith('/admin') || q.path.startsWith('/v1/'))).toEqual([]);
    });
  }
});

// ---- headers a sandbox sends that must never reach the external API ---------------------------------

describe('what reaches the upstream: only the injected credential, never the token or caller identity', () => {
  for (const [service, method, path, header] of [
    ['slack', 'POST', '/api/chat.postMessage', 'authorization'],
    ['openai', 'POST', '/v1/chat/completions', 'authorization'],
    ['anthropic', 'POST', '/v1/messages', 'x-api-key'],
    ['github', 'GET', '/repos/o/r/issues', 'authorization'],
  ] as const) {
    book.case(
      'egress-input',
      `upstream: ${service} gets its own credential, overwriting a caller's ${header}, and no token, cookie or identity header`,
      async () => {
        stack.upstream.clear();
        const r = await egressCall(E(), service, admin.token, {
          method,
          path,
          headers: {
            authorization: 'Bearer attacker-chosen',
            'x-api-key': 'attacker-chosen',
            cookie: 'session=attacker',
            'proxy-authorization': 'Basic eDp4',
            'x-sandbox-id': standard.id,
            'x-sandbox-tier': 'admin',
            'x-agentd-sandbox-id': standard.id,
            'x-agentd-client-id': 'admin',
            'content-length': '0',
          },
        });
        expect(r.status, r.body).toBe(200);
        expect(received()).toHaveLength(1);
        const h = received()[0]!.headers;
        const c = spec.egressServices[service]!.credential!;
        expect(h[c.header.toLowerCase()]).toBe(`${c.prefix}${stack.credentials[service]}`);
        expect(JSON.stringify(h)).not.toContain('attacker');
        expect(h['cookie']).toBeUndefined();
        expect(h['proxy-authorization']).toBeUndefined();
        expect(h[SANDBOX_TOKEN_HEADER]).toBeUndefined();
        expect(Object.keys(h).filter((k) => k.startsWith('x-agentd') || k.startsWith('x-sandbox'))).toEqual([]);
        expect(r.body).not.toContain(stack.credentials[service]!);
      },
    );
  }
});

// ---- tokens -------------------------------------------------------------------------------------

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
const claimsFor = (s: Sbx, tier: string, extra: object = {}) => ({
  sub: s.id,
  tier,
  iss: TOKEN_ISSUER,
  aud: TOKEN_AUDIENCE,
  iat: now() - 5,
  exp: now() + 600,
  ...extra,
});
const attackerKey = Buffer.from('an-attacker-key-that-is-32-bytes-long!!').toString('base64url');
async function sign(header: Record<string, unknown>, claims: Record<string, unknown>, key: Uint8Array | KeyObject): Promise<string> {
  return new SignJWT(claims).setProtectedHeader(header as never).sign(key as never);
}

interface TokenCase {
  readonly name: string;
  readonly token: () => Promise<string | undefined>;
  /** Where it goes: the token header (default), or a wrong carrier. */
  readonly carrier?: 'bearer' | 'query' | 'cookie';
  readonly status: number | number[];
  readonly code?: string | string[];
}

const TOKENS: TokenCase[] = [
  { name: 'no token', token: async () => undefined, status: 401, code: 'invalid_sandbox_token' },
  { name: 'garbage', token: async () => 'not-a-jwt', status: 401, code: 'invalid_sandbox_token' },
  { name: 'three empty segments', token: async () => '..', status: 401, code: 'invalid_sandbox_token' },
  {
    name: 'forged with another key, tier admin',
    token: () => mintToken(attackerKey, { sub: restricted.id, tier: 'admin' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'altered claims: tier restricted -> admin, signature kept',
    token: async () => {
      const [h, p, s] = restricted.token.split('.');
      return [h, b64({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), tier: 'admin' }), s].join('.');
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'altered claims: sub -> another sandbox, signature kept',
    token: async () => {
      const [h, p, s] = restricted.token.split('.');
      return [h, b64({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: admin.id }), s].join('.');
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'altered claims: exp pushed a year out, signature kept',
    token: async () => {
      const [h, p, s] = restricted.token.split('.');
      return [h, b64({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), exp: now() + 365 * 86400 }), s].join('.');
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'signature of another valid token spliced in',
    token: async () => {
      const [h, p] = restricted.token.split('.');
      return [h, p, admin.token.split('.')[2]].join('.');
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  { name: 'signature stripped', token: async () => restricted.token.split('.').slice(0, 2).join('.') + '.', status: 401, code: 'invalid_sandbox_token' },
  {
    name: 'alg none, tier admin',
    token: async () => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claimsFor(restricted, 'admin'))}.`,
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'alg none with kid k1',
    token: async () => `${b64({ alg: 'none', typ: 'JWT', kid: 'k1' })}.${b64(claimsFor(restricted, 'admin'))}.`,
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'alg "None", original signature kept',
    token: async () => `${b64({ alg: 'None', typ: 'JWT', kid: 'k1' })}.${b64(claimsFor(restricted, 'admin'))}.${restricted.token.split('.')[2]}`,
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: "HS256 keyed with the JWKS document itself (the verifier's material)",
    token: () => mintToken(Buffer.from(readFileSync(stack.jwksFile)).toString('base64url'), { sub: restricted.id, tier: 'admin' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'HS256 keyed with the base64url text of k (not decoded)',
    token: () => mintToken(Buffer.from(stack.signingKey).toString('base64url'), { sub: restricted.id, tier: 'admin' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'HS256 keyed with the kid',
    token: () => mintToken(Buffer.from('k1'.repeat(16)).toString('base64url'), { sub: restricted.id, tier: 'admin' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'HS384 with another key',
    token: () => sign({ alg: 'HS384', kid: 'k1' }, claimsFor(restricted, 'admin'), Buffer.from('an-attacker-key-that-is-48-bytes-long-xxxxxxxxxxx')),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: "RS256 with the attacker's public key embedded as jwk",
    token: async () => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      return sign({ alg: 'RS256', kid: 'k1', jwk: await exportJWK(publicKey) }, claimsFor(restricted, 'admin'), privateKey);
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'RS256 with a jku pointing to the attacker',
    token: async () => {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      return sign({ alg: 'RS256', kid: 'k1', jku: 'http://evil.example/jwks.json' }, claimsFor(restricted, 'admin'), privateKey);
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'ES256 with another key',
    token: async () => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      return sign({ alg: 'ES256', kid: 'k1' }, claimsFor(restricted, 'admin'), privateKey);
    },
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'kid confusion: unknown kid, the real key',
    token: () => mintToken(stack.signingKey, { sub: restricted.id, tier: 'admin', kid: 'k2' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'kid confusion: kid "../../../../dev/null", another key',
    token: () => mintToken(Buffer.alloc(32).toString('base64url'), { sub: restricted.id, tier: 'admin', kid: '../../../../dev/null' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'kid confusion: empty kid, another key',
    token: () => mintToken(attackerKey, { sub: restricted.id, tier: 'admin', kid: '' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'kid confusion: kid k1, all-zero key',
    token: () => mintToken(Buffer.alloc(32).toString('base64url'), { sub: restricted.id, tier: 'admin' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'kid confusion: kid k1 with an injected SQL/JSON payload',
    token: () => mintToken(attackerKey, { sub: restricted.id, tier: 'admin', kid: "k1' OR '1'='1" }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'expired two minutes ago',
    token: () => mintToken(stack.signingKey, { sub: restricted.id, tier: 'restricted', expInSeconds: -120 }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: "expired ten seconds ago (inside Envoy's 30 s skew: OPA refuses)",
    token: () => mintToken(stack.signingKey, { sub: restricted.id, tier: 'restricted', expInSeconds: -10 }),
    status: 401,
    code: 'token_expired',
  },
  {
    name: 'not valid yet (nbf in an hour)',
    token: () => sign({ alg: 'HS256', kid: 'k1' }, { ...claimsFor(restricted, 'restricted'), nbf: now() + 3600 }, Buffer.from(stack.signingKey, 'base64url')),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'another issuer',
    token: () => mintToken(stack.signingKey, { sub: restricted.id, tier: 'restricted', iss: 'someone-else' }),
    status: 401,
    code: 'invalid_sandbox_token',
  },
  {
    name: 'another audience',
    token: () => mintToken(stack.signingKey, { sub: restricted.id, tier: 'restricted', aud: 'agentd-gateway' }),
    status: 403,
    code: 'invalid_sandbox_token',
  },
  { name: 'a valid token sent as Authorization: Bearer', token: async () => restricted.token, carrier: 'bearer', status: 401, code: 'invalid_sandbox_token' },
  { name: 'a valid token sent in the query string', token: async () => restricted.token, carrier: 'query', status: 401, code: 'invalid_sandbox_token' },
  { name: 'a valid token sent as a cookie', token: async () => restricted.token, carrier: 'cookie', status: 401, code: 'invalid_sandbox_token' },
];

describe('sandbox tokens (restricted sandbox calling httpbin/get, which its tier allows)', () => {
  for (const c of TOKENS) {
    book.case('egress-input', `token: ${c.name} -> ${c.status}`, async () => {
      stack.upstream.clear();
      const token = await c.token();
      const headers: Record<string, string> = {};
      let path = '/get';
      if (token !== undefined && c.carrier === 'bearer') headers['authorization'] = `Bearer ${token}`;
      if (token !== undefined && c.carrier === 'query') path = `/get?access_token=${token}&${SANDBOX_TOKEN_HEADER}=${token}`;
      if (token !== undefined && c.carrier === 'cookie') headers['cookie'] = `${SANDBOX_TOKEN_HEADER}=${token}`;
      const r = await egressCall(E(), 'httpbin', c.carrier ? undefined : token, { path, headers });
      expectRefusal(r.status, r.body, { status: c.status, code: c.code });
      expect(received()).toEqual([]);
    });
  }
  book.case('egress-input', 'token: the valid restricted token itself (control) -> 200', async () => {
    expect((await egressCall(E(), 'httpbin', restricted.token, { path: '/get' })).status).toBe(200);
  });
  book.case('egress-input', 'token: the real key without a kid verifies (what any holder of the key could do: control)', async () => {
    const t = await sign({ alg: 'HS256' }, claimsFor(restricted, 'restricted'), Buffer.from(stack.signingKey, 'base64url'));
    expect((await egressCall(E(), 'httpbin', t, { path: '/get' })).status).toBe(200);
  });
  for (const [name, first, second] of [
    ['valid restricted first, forged admin second', 'restricted', 'forged'],
    ['forged admin first, valid restricted second', 'forged', 'restricted'],
  ] as const) {
    book.case('egress-input', `token: two token headers (${name}) -> never admin`, async () => {
      const forged = await mintToken(attackerKey, { sub: admin.id, tier: 'admin' });
      const t = { restricted: restricted.token, forged };
      stack.upstream.clear();
      const r = await raw(
        `POST /v1/chat/completions HTTP/1.1\r\nHost: openai\r\n${SANDBOX_TOKEN_HEADER}: ${t[first]}\r\n${SANDBOX_TOKEN_HEADER}: ${t[second]}\r\ncontent-length: 0\r\nConnection: close\r\n\r\n`,
      );
      expectRefusal(r.status, r.body, { status: [401, 403] });
      expect(received()).toEqual([]);
    });
  }
  book.case('egress-input', 'token: a restricted sandbox cannot reach openai by any claim header (x-sandbox-tier, x-agentd-sandbox-tier)', async () => {
    stack.upstream.clear();
    const r = await egressCall(E(), 'openai', restricted.token, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'x-sandbox-tier': 'admin', 'x-agentd-sandbox-tier': 'admin', 'x-agentd-tier': 'admin', 'x-sandbox-id': admin.id },
    });
    expectRefusal(r.status, r.body, { status: 403, code: 'service_not_allowed' });
    expect(received()).toEqual([]);
    const line = await stack.processes.egress.waitForJsonLine(
      (l) => l.service === 'openai' && l.reason === 'service_not_allowed' && l.sandbox_id === restricted.id,
    );
    expect(line.tier).toBe('restricted');
  });
  book.case(
    'egress-input',
    "token: another sandbox's token makes the caller that sandbox, with its tier, whatever the caller claims (access log)",
    async () => {
      stack.upstream.clear();
      const r = await egressCall(E(), 'openai', standard.token, {
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { 'x-sandbox-id': restricted.id, 'x-agentd-sandbox-id': restricted.id, 'content-length': '0' },
      });
      expect(r.status).toBe(200);
      const line = await stack.processes.egress.waitForJsonLine((l) => l.service === 'openai' && l.status === 200 && l.sandbox_id === standard.id);
      expect(line.tier).toBe('standard');
      expect(stack.processes.egress.jsonLines().filter((l) => l.service === 'openai' && l.status === 200 && l.sandbox_id === restricted.id)).toEqual([]);
    },
  );
  // A token is a bearer credential that Envoy verifies offline; agentd's sandbox registry (an OPA
  // bundle it long-polls) is what revokes it: a terminated sandbox's token is refused at once.
  book.case('egress-input', 'token: the token of a terminated sandbox is refused at the egress within a second', async () => {
    const s = await sandbox('restricted');
    expect((await egressCall(E(), 'httpbin', s.token, { path: '/get' })).status).toBe(200);
    const t0 = Date.now();
    expect((await api('DELETE', `/api/v1/sandboxes/${s.id}`)).json().state).toBe('terminated');
    const viaAgentd = await api('POST', `/api/v1/sandboxes/${s.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'httpbin', method: 'GET', path: '/get' },
    });
    expect(viaAgentd.status).toBe(409);
    stack.upstream.clear();
    const direct = await egressCall(E(), 'httpbin', s.token, { path: '/get' });
    expectRefusal(direct.status, direct.body, { status: 401, code: 'sandbox_not_active' });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(received()).toEqual([]);
  });
  book.case('egress-input', 'token: over HTTP/2 a forged token is refused and a valid one works', async () => {
    const forged = await mintToken(attackerKey, { sub: restricted.id, tier: 'admin' });
    const bad = await h2Send(E(), { path: '/get', headers: { ':authority': 'httpbin', [SANDBOX_TOKEN_HEADER]: forged } });
    expectRefusal(bad.status, bad.body, { status: 401, code: 'invalid_sandbox_token' });
    const good = await h2Send(E(), { path: '/get', headers: { ':authority': 'httpbin', [SANDBOX_TOKEN_HEADER]: restricted.token } });
    expect(good.status).toBe(200);
  });
});

// ---- tier escalation through agentd -----------------------------------------------------------

describe('tier escalation through agentd', () => {
  const TIERS: [string, unknown][] = [
    ['"Admin"', 'Admin'],
    ['" admin"', ' admin'],
    ['"admin\\n"', 'admin\n'],
    ['"root"', 'root'],
    ['"../admin"', '../admin'],
    ['["admin"]', ['admin']],
    ['{"name":"admin"}', { name: 'admin' }],
    ['"admin,restricted"', 'admin,restricted'],
  ];
  for (const [name, tier] of TIERS) {
    book.case('egress-input', `tier: create a sandbox with tier ${name} -> 400 invalid_argument`, async () => {
      const r = await api('POST', '/api/v1/sandboxes', { tier });
      expect(r.status, r.body).toBe(400);
      expect(r.json().error).toMatchObject({ code: 'invalid_argument', field: 'tier' });
    });
  }
  for (const [field, value] of [
    ['token', 'x'],
    ['kid', 'k1'],
    ['id', 'sbx_000000000000000000000000'],
    ['expires_at', '2100-01-01T00:00:00Z'],
  ] as const) {
    book.case('egress-input', `tier: create a sandbox choosing its own ${field} -> 400 (unknown fields are refused)`, async () => {
      const r = await api('POST', '/api/v1/sandboxes', { tier: 'restricted', [field]: value });
      expect(r.status, r.body).toBe(400);
      expect(r.json().error.code).toBe('invalid_argument');
    });
  }
  book.case('egress-input', "tier: the token agentd signs for an intent carries the sandbox's own tier (access log)", async () => {
    const r = await api('POST', `/api/v1/sandboxes/${restricted.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'openai', method: 'POST', path: '/v1/chat/completions', headers: { 'content-type': 'application/json' }, body: '{}' },
    });
    expect(r.json().status).toBe(403);
    const line = await stack.processes.egress.waitForJsonLine(
      (l) => l.service === 'openai' && l.sandbox_id === restricted.id && l.reason === 'service_not_allowed',
    );
    expect(line.tier).toBe('restricted');
  });
});

// ---- secret hygiene of this stack -------------------------------------------------------------

describe('secret hygiene (egress stack)', () => {
  book.case('secret-hygiene', 'egress stack: no API key, credential or signing key in any log, rendered file, bundle or data file', async () => {
    await new Promise((r) => setTimeout(r, 1200));
    const { findings } = scanStack(stack, secretsOf(stack));
    expect(findings).toEqual([]);
  });
  book.case('secret-hygiene', 'egress stack: no sandbox token in any log', async () => {
    const { findings } = scanStack(stack, Object.fromEntries(tokens.map((t, i) => [`sandbox token ${i}`, t])));
    expect(findings.filter((f) => f.where.startsWith('logs/'))).toEqual([]);
  });
});
