// Hostile input at the gateway: API-key headers in every wrong shape, path tricks, method
// overrides, oversized and slow requests, forged identity and policy headers, the admin
// interface; over HTTP/1.1 and HTTP/2 (and gRPC where it differs). Real gateway Envoy, OPA and
// agentd on loopback; for what the gateway forwards, agentd is briefly replaced by a recorder
// on its ports.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { rawRequest, type RawResponse } from '../../scripts/local/clients.ts';
import { connect as h2connect, constants as h2constants } from 'node:http2';
import { sha256Hex } from '../../policy/bundle.ts';
import {
  CaseBook,
  checkedSecretsOf,
  errorCode,
  h2Send,
  policyVariant,
  rawExchange,
  replaceAgentdWithRecorder,
  scanStack,
  type H2Result,
  type RawExchange,
  type SeenRequest,
} from './support.ts';

const book = new CaseBook('gateway-input');
// The shipped policy, with the reader and operator clients on a larger budget: this file sends
// many requests per key, and rate limits are the load suite's subject.
const spec = policyVariant((d) => {
  for (const c of d.clients.clients) if (c.id === 'dashboard' || c.id === 'ci') c.rate_limit_tier = 'premium';
});
let stack: Stack;
let K: Record<'admin' | 'ci' | 'dashboard' | 'retired', string>;
let slowHeaders: Promise<RawExchange>;

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-sec-gw-')) });
  K = stack.apiKeys as typeof K;
  // Started now, checked near the end: a client that sends its headers one line a second.
  const lines = ['GET /api/v1/status HTTP/1.1\r\nHost: gateway\r\n', ...Array.from({ length: 20 }, (_, i) => `x-slow-${i}: ${'a'.repeat(8)}\r\n`)];
  slowHeaders = rawExchange(stack.ports.gateway, lines, { dripMs: 1000, waitMs: 16_000 });
});
afterAll(async () => {
  try {
    await stack?.stop();
  } finally {
    book.flush();
  }
});

const P = () => stack.ports.gateway;
type Headers = Record<string, string | string[]>;
const h1 = (path: string, headers: Headers = {}, method = 'GET', body?: string): Promise<RawResponse> => rawRequest(P(), { method, path, headers, body });
/** An HTTP/2 exchange that was answered: a transport error (reset, GOAWAY, timeout) fails the case. */
function answered(r: H2Result): H2Result {
  expect(r.error, `HTTP/2 transport error instead of an answer: ${JSON.stringify(r).slice(0, 300)}`).toBeUndefined();
  expect(r.status, JSON.stringify(r).slice(0, 300)).toBeGreaterThan(0);
  return r;
}
const h2 = async (path: string, headers: Record<string, string> = {}, method = 'GET', body?: string) =>
  answered(await h2Send(P(), { method, path, headers, body }));
/**
 * One HTTP/2 request on a connection of its own that sends header blocks up to 1 MB: node's
 * client refuses to send a block over 64 KB by default (the stream ends in REFUSED_STREAM and the
 * gateway never sees it), so without this a 100 KB header would test the client, not the gateway.
 * `goaway`: the error code of a GOAWAY the gateway sent on that connection, if it sent one;
 * `next`: the status of a valid request sent on the same connection afterwards (0: closed).
 */
async function h2Large(path: string, headers: Record<string, string>): Promise<H2Result & { goaway?: number; next: number }> {
  const session = h2connect(`http://127.0.0.1:${P()}`, { maxSendHeaderBlockLength: 1 << 20 });
  let goaway: number | undefined;
  session.on('goaway', (code) => {
    goaway = code;
  });
  session.on('error', () => undefined); // the outcome is in the result (error, goaway)
  try {
    const r = await h2Send(P(), { session, path, headers });
    const next =
      session.closed || session.destroyed ? 0 : (await h2Send(P(), { session, path: '/api/v1/status', headers: { 'x-api-key': K.dashboard } })).status;
    return { ...r, ...(goaway !== undefined ? { goaway } : {}), next };
  } finally {
    session.destroy();
  }
}
/** A counter of the gateway Envoy (its admin interface, on loopback); 0 while Envoy has not created it. */
async function gatewayCounter(name: string): Promise<number> {
  const escaped = name.replace(/\./g, '\\.');
  const r = await rawRequest(stack.ports.gatewayAdmin, { path: `/stats?filter=${encodeURIComponent(`^${escaped}$`)}` });
  expect(r.status, r.body).toBe(200);
  const m = r.body.match(new RegExp(`^${escaped}: (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}
const raw = (text: string | Buffer, waitMs = 3000) => rawExchange(P(), text, { waitMs });
const rawGet = (path: string, headerLines: (string | Buffer)[], method = 'GET') =>
  raw(
    Buffer.concat([
      Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: gateway\r\n`),
      ...headerLines.map((l) => Buffer.concat([Buffer.from(l as never), Buffer.from('\r\n')])),
      Buffer.from('Connection: close\r\n\r\n'),
    ]),
  );

const json = (s: string) => {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
};
/** A refusal is a 4xx/5xx with a JSON error body (the shape every refusal has). */
function expectRefusal(status: number, body: string, want: { status?: number | number[]; code?: string | string[] } = {}) {
  expect(status, body).toBeGreaterThanOrEqual(400);
  if (want.status !== undefined) expect([want.status].flat(), body).toContain(status);
  const code = errorCode(body);
  expect(code, `JSON error body expected, got: ${body.slice(0, 200)}`).toBeTruthy();
  if (want.code !== undefined) expect([want.code].flat(), body).toContain(code);
}

// ---- 1. API-key headers ---------------------------------------------------------------------

interface KeyCase {
  readonly name: string;
  /** Headers (HTTP/1.1 and HTTP/2) or raw header lines (HTTP/1.1 only, bytes as given). */
  readonly headers?: (k: typeof K) => Headers;
  readonly rawLines?: (k: typeof K) => (string | Buffer)[];
  readonly path?: (k: typeof K) => string;
  readonly status: number | number[];
  readonly code?: string | string[];
  readonly h2?: boolean;
  /**
   * Over HTTP/2 oversized headers get no status, and each way is asserted as exactly that
   * refusal (no status, no headers, no body): `goaway`, a single header field over 64 KB, which
   * Envoy's HPACK decoder refuses by closing the connection with GOAWAY COMPRESSION_ERROR;
   * `reset`, headers over the 60 KB limit in fields that decode, for which Envoy resets the
   * stream (RST_STREAM INTERNAL_ERROR, counted in http2.tx_reset) and keeps the connection.
   */
  readonly h2Refused?: 'goaway' | 'reset';
}

const big = (n: number) => 'k'.repeat(n);
const KEY_CASES: KeyCase[] = [
  { name: 'no key at all', headers: () => ({}), status: 401, code: 'missing_api_key', h2: true },
  { name: 'empty x-api-key', headers: () => ({ 'x-api-key': '' }), status: 401, code: ['invalid_api_key', 'missing_api_key'], h2: true },
  { name: 'whitespace-only x-api-key', headers: () => ({ 'x-api-key': '   ' }), status: 401, code: ['invalid_api_key', 'missing_api_key'] },
  { name: 'empty bearer', headers: () => ({ authorization: 'Bearer ' }), status: 401, code: ['invalid_api_key', 'missing_api_key'], h2: true },
  { name: '100 KB x-api-key', headers: () => ({ 'x-api-key': big(100_000) }), status: 431, code: 'headers_too_large', h2: true, h2Refused: 'goaway' },
  {
    name: '100 KB bearer key',
    headers: () => ({ authorization: `Bearer ${big(100_000)}` }),
    status: 431,
    code: 'headers_too_large',
    h2: true,
    h2Refused: 'goaway',
  },
  {
    name: 'valid key plus 100 KB of other headers',
    headers: (k) => ({ 'x-api-key': k.admin, 'x-pad': big(100_000) }),
    status: 431,
    code: 'headers_too_large',
    h2: true,
    h2Refused: 'goaway',
  },
  // The same 100 KB in two fields of 50 KB: each field decodes, the whole is over the limit.
  {
    name: 'valid key plus 2 x 50 KB of other headers',
    headers: (k) => ({ 'x-api-key': k.admin, 'x-pad-a': big(50_000), 'x-pad-b': big(50_000) }),
    status: 431,
    code: 'headers_too_large',
    h2: true,
    h2Refused: 'reset',
  },
  {
    name: 'valid key plus 101 headers',
    headers: (k) => ({ 'x-api-key': k.admin, ...Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-h${i}`, 'v'])) }),
    status: 431,
    code: 'headers_too_large',
  },
  {
    name: 'non-ASCII (latin1 bytes) key',
    rawLines: () => [Buffer.concat([Buffer.from('x-api-key: '), Buffer.from([0xe9, 0xe8, 0xff, 0xfe])])],
    status: [400, 401],
    code: ['invalid_api_key', 'bad_request'],
  },
  {
    name: 'non-ASCII (UTF-8) key',
    rawLines: () => [Buffer.concat([Buffer.from('x-api-key: '), Buffer.from('ключ-🔑', 'utf8')])],
    status: [400, 401],
    code: ['invalid_api_key', 'bad_request'],
  },
  {
    name: 'valid key with a non-ASCII byte appended',
    rawLines: (k) => [Buffer.concat([Buffer.from(`x-api-key: ${k.admin}`), Buffer.from([0xa0])])],
    status: [400, 401],
    code: ['invalid_api_key', 'bad_request'],
  },
  {
    name: 'valid key with a control character inside',
    rawLines: (k) => [`x-api-key: ${k.admin.slice(0, 5)}\x01${k.admin.slice(5)}`],
    status: [400, 401],
    code: ['invalid_api_key', 'bad_request'],
  },
  {
    name: 'valid key with a NUL byte inside',
    rawLines: (k) => [`x-api-key: ${k.admin.slice(0, 5)}\x00${k.admin.slice(5)}`],
    status: [400, 401],
    code: ['invalid_api_key', 'bad_request'],
  },
  { name: 'x-api-key twice, the same valid key', headers: (k) => ({ 'x-api-key': [k.admin, k.admin] }), status: 401, code: 'invalid_api_key' },
  { name: 'x-api-key twice, reader key then admin key', headers: (k) => ({ 'x-api-key': [k.dashboard, k.admin] }), status: 401, code: 'invalid_api_key' },
  { name: 'x-api-key twice, invalid then valid', headers: (k) => ({ 'x-api-key': ['agk_nope', k.admin] }), status: 401, code: 'invalid_api_key' },
  { name: 'x-api-key twice, disabled then valid', headers: (k) => ({ 'x-api-key': [k.retired, k.admin] }), status: 401, code: 'invalid_api_key' },
  {
    name: 'Authorization twice, two bearer keys',
    headers: (k) => ({ authorization: [`Bearer ${k.dashboard}`, `Bearer ${k.admin}`] }),
    status: 401,
    code: 'invalid_api_key',
  },
  {
    name: 'key in the query string (api_key)',
    headers: () => ({}),
    path: (k) => `/api/v1/status?api_key=${k.admin}`,
    status: 401,
    code: 'missing_api_key',
    h2: true,
  },
  {
    name: 'key in the query string (x-api-key)',
    headers: () => ({}),
    path: (k) => `/api/v1/status?x-api-key=${k.admin}`,
    status: 401,
    code: 'missing_api_key',
  },
  // The reader's key decides; agentd then refuses the unknown query parameter: never admin.
  {
    name: 'key in the query string beside a reader key',
    headers: (k) => ({ 'x-api-key': k.dashboard }),
    path: (k) => `/api/v1/status?api_key=${k.admin}`,
    status: 400,
    code: 'invalid_argument',
  },
  { name: 'key in a cookie', headers: (k) => ({ cookie: `api_key=${k.admin}; x-api-key=${k.admin}` }), status: 401, code: 'missing_api_key', h2: true },
  {
    name: 'key as Authorization: Basic',
    headers: (k) => ({ authorization: `Basic ${Buffer.from(`${k.admin}:`).toString('base64')}` }),
    status: 401,
    code: 'missing_api_key',
  },
  { name: 'key as Authorization: Token', headers: (k) => ({ authorization: `Token ${k.admin}` }), status: 401, code: 'missing_api_key' },
  { name: 'key as Authorization without a scheme', headers: (k) => ({ authorization: k.admin }), status: 401, code: 'missing_api_key' },
  { name: 'key in an api-key header', headers: (k) => ({ 'api-key': k.admin }), status: 401, code: 'missing_api_key', h2: true },
  { name: 'key in an x-auth-token header', headers: (k) => ({ 'x-auth-token': k.admin }), status: 401, code: 'missing_api_key' },
  { name: 'key in proxy-authorization', headers: (k) => ({ 'proxy-authorization': `Bearer ${k.admin}` }), status: 401, code: 'missing_api_key' },
  {
    name: 'both key headers, the same key',
    headers: (k) => ({ 'x-api-key': k.admin, authorization: `Bearer ${k.admin}` }),
    status: 401,
    code: 'ambiguous_api_key',
    h2: true,
  },
  {
    name: 'both key headers, reader and admin',
    headers: (k) => ({ 'x-api-key': k.dashboard, authorization: `Bearer ${k.admin}` }),
    status: 401,
    code: 'ambiguous_api_key',
    h2: true,
  },
  {
    name: 'both key headers, empty x-api-key and a bearer',
    headers: (k) => ({ 'x-api-key': '', authorization: `Bearer ${k.admin}` }),
    status: 401,
    code: ['ambiguous_api_key', 'invalid_api_key'],
  },
  { name: 'disabled key', headers: (k) => ({ 'x-api-key': k.retired }), status: 403, code: 'disabled_api_key', h2: true },
  { name: 'disabled key as bearer', headers: (k) => ({ authorization: `Bearer ${k.retired}` }), status: 403, code: 'disabled_api_key' },
  {
    name: 'a key with one character changed',
    headers: (k) => ({ 'x-api-key': k.admin.slice(0, -1) + (k.admin.endsWith('A') ? 'B' : 'A') }),
    status: 401,
    code: 'invalid_api_key',
    h2: true,
  },
  { name: 'the SHA-256 of a key (what the bundle holds)', headers: (k) => ({ 'x-api-key': sha256Hex(k.admin) }), status: 401, code: 'invalid_api_key' },
];

describe('API-key headers', () => {
  for (const c of KEY_CASES) {
    book.case('gateway-input', `key: ${c.name} (HTTP/1.1) -> ${c.status}`, async () => {
      const path = c.path?.(K) ?? '/api/v1/status';
      if (c.rawLines) {
        const r = await rawGet(path, c.rawLines(K));
        expectRefusal(r.status, r.body, { status: c.status, code: c.code });
        return;
      }
      const r = await h1(path, c.headers!(K));
      if (r.status === 200) {
        // Only the reader request (an admin key in the query beside it) passes, as the reader.
        expect([c.status].flat()).toContain(200);
        expect(r.json().version).toBeTruthy();
        return;
      }
      expectRefusal(r.status, r.body, { status: c.status, code: c.code });
    });
    if (c.h2) {
      const h2Outcome = c.h2Refused === 'goaway' ? 'GOAWAY COMPRESSION_ERROR' : c.h2Refused === 'reset' ? 'stream reset' : c.status;
      book.case('gateway-input', `key: ${c.name} (HTTP/2) -> ${h2Outcome}`, async () => {
        const resetsBefore = c.h2Refused === 'reset' ? await gatewayCounter('http2.tx_reset') : 0;
        const r = await h2Large(c.path?.(K) ?? '/api/v1/status', c.headers!(K) as Record<string, string>);
        const outcome = { status: r.status, headers: r.headers, body: r.body, goaway: r.goaway, next: r.next };
        if (c.h2Refused === 'goaway') {
          expect(outcome, `refused by a GOAWAY COMPRESSION_ERROR, nothing served (${r.error})`).toEqual({
            status: 0,
            headers: {},
            body: '',
            goaway: h2constants.NGHTTP2_COMPRESSION_ERROR,
            next: 0,
          });
          return;
        }
        if (c.h2Refused === 'reset') {
          expect(outcome, `refused by a stream reset, nothing served, the connection kept (${r.error})`).toEqual({
            status: 0,
            headers: {},
            body: '',
            goaway: undefined,
            next: 200,
          });
          expect(r.error).toMatch(/NGHTTP2_INTERNAL_ERROR/);
          expect(await gatewayCounter('http2.tx_reset'), 'streams reset by the gateway').toBe(resetsBefore + 1);
          return;
        }
        answered(r);
        expect(r.next).toBe(200);
        expectRefusal(r.status, r.body, { status: c.status, code: c.code });
      });
    }
  }

  book.case('gateway-input', 'key: lowercase "bearer" scheme is accepted (control)', async () => {
    expect((await h1('/api/v1/status', { authorization: `bearer ${K.dashboard}` })).status).toBe(200);
  });

  book.case('gateway-input', 'key: valid key over HTTP/1.1 and HTTP/2 (control)', async () => {
    expect((await h1('/api/v1/status', { 'x-api-key': K.dashboard })).status).toBe(200);
    expect((await h2('/api/v1/status', { 'x-api-key': K.dashboard })).status).toBe(200);
  });

  book.case('gateway-input', 'key: identity is per request on a kept-alive HTTP/1.1 connection (pipelined: admin, none, reader)', async () => {
    const req = (headers: string) => `GET /api/v1/sandboxes?limit=1 HTTP/1.1\r\nHost: gateway\r\n${headers}\r\n`;
    const r = await raw(
      req(`x-api-key: ${K.admin}\r\n`) +
        req('') +
        req(`x-api-key: ${K.dashboard}\r\n`).replace('GET /api/v1/sandboxes?limit=1', 'DELETE /api/v1/sandboxes/sbx_000000000000000000000000'),
      3000,
    );
    const statuses = [...r.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    expect(statuses).toEqual([200, 401, 403]);
  });

  book.case('gateway-input', 'key: identity is per stream on one HTTP/2 connection (admin, none, reader-forbidden)', async () => {
    const session = h2connect(`http://127.0.0.1:${P()}`);
    try {
      const [a, b, c] = (
        await Promise.all([
          h2Send(P(), { session, path: '/api/v1/status', headers: { 'x-api-key': K.admin } }),
          h2Send(P(), { session, path: '/api/v1/status' }),
          h2Send(P(), { session, method: 'DELETE', path: '/api/v1/sandboxes/sbx_000000000000000000000000', headers: { 'x-api-key': K.dashboard } }),
        ])
      ).map(answered) as [H2Result, H2Result, H2Result];
      expect([a.status, b.status, c.status]).toEqual([200, 401, 403]);
      expect(errorCode(b.body)).toBe('missing_api_key');
      expect(errorCode(c.body)).toBe('method_not_allowed');
    } finally {
      session.close();
    }
  });
});

// ---- 2. paths -------------------------------------------------------------------------------

interface PathCase {
  readonly path: string;
  /** Outcome for the reader (GET on /api/v1/status and /api/v1/sandboxes/**). */
  readonly reader: number;
  readonly code?: string | string[];
  /** HTTP/2 too (node's HTTP/2 client refuses some request targets). */
  readonly h2?: boolean;
}

const PATH_CASES: PathCase[] = [
  { path: '/api/v1/sandboxes/../../v1/admin', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/sandboxes/%2e%2e/%2e%2e/v1/admin', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/sandboxes/%2E%2E/%2E%2E/v1/admin', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/sandboxes/.%2e/.%2e/v1/admin', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/sandboxes/./../../v1/./admin', reader: 403, code: 'forbidden_route' },
  { path: '/api/v1/sandboxes%2f..%2f..%2fv1%2fadmin', reader: 400, code: 'bad_request', h2: true },
  { path: '/api/v1/sandboxes%2F..%2Fadmin', reader: 400, code: 'bad_request', h2: true },
  { path: '/api/v1/sandboxes%5c..%5cadmin', reader: 400, code: 'bad_request', h2: true },
  { path: '/api/v1/sandboxes/..\\..\\v1\\admin', reader: 403, code: 'forbidden_route' },
  { path: '/api/v1/sandboxes/%252e%252e/%252e%252e/v1/admin', reader: 404, code: 'not_found' },
  { path: '/api/v1/status%00', reader: 400, code: 'bad_request', h2: true },
  { path: '/api/v1/status%0d%0ax-agentd-client-id:%20admin', reader: 400, code: ['bad_request', 'invalid_path'], h2: true },
  { path: '/api/v1/status#fragment', reader: 400, code: 'bad_request' },
  { path: '/api/v1/status.', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/status%2e', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/status..', reader: 403, code: 'forbidden_route' },
  { path: '/api/v1/status/..', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/API/v1/status', reader: 404, code: 'not_found', h2: true },
  { path: '/api/V1/status', reader: 404, code: 'not_found', h2: true },
  { path: '/api/v1/STATUS', reader: 403, code: 'forbidden_route', h2: true },
  { path: '/api/v1/Sandboxes', reader: 403, code: 'forbidden_route' },
  { path: '/api/v1/..;/v1/admin', reader: 403, code: 'forbidden_route' },
  { path: '/api/v1/status;/../admin', reader: 403, code: 'forbidden_route' },
  { path: '/api/v1/sandboxes/..%00/admin', reader: 400, code: 'bad_request' },
  { path: '*', reader: 400, code: 'bad_request' },
  // Tricks that normalise to a granted path: allowed, and agentd is asked for exactly that path.
  { path: '//api//v1///status', reader: 200, h2: true },
  { path: '/api/v1/./status', reader: 200, h2: true },
  { path: '/api/v1/status/', reader: 200, h2: true },
  { path: '/api/v1/%73tatus', reader: 200, h2: true },
  { path: '/api/v1/sandboxes/x/../../status', reader: 200, h2: true },
  { path: '/api/v1/%2e%2e/v1/status', reader: 200, h2: true },
  { path: 'http://evil.example/api/v1/status', reader: 200 },
];

describe('path tricks (reader key: GET /api/v1/status and /api/v1/sandboxes/** only)', () => {
  for (const c of PATH_CASES) {
    const check = (status: number, body: string) => {
      if (c.reader === 200) {
        expect(status, body).toBe(200);
        expect(json(body)?.version, body).toBeTruthy(); // agentd's status document
      } else expectRefusal(status, body, { status: c.reader, code: c.code });
    };
    book.case('gateway-input', `path: ${JSON.stringify(c.path)} (HTTP/1.1) -> ${c.reader}`, async () => {
      const r = await raw(`GET ${c.path} HTTP/1.1\r\nHost: gateway\r\nx-api-key: ${K.dashboard}\r\nConnection: close\r\n\r\n`);
      check(r.status, r.body);
    });
    if (c.h2) {
      book.case('gateway-input', `path: ${JSON.stringify(c.path)} (HTTP/2) -> ${c.reader}`, async () => {
        const r = await h2(c.path, { 'x-api-key': K.dashboard });
        check(r.status, r.body);
      });
    }
  }

  book.case('gateway-input', 'path: an operator cannot reach terminate (DELETE) through any trick', async () => {
    const created = await h1('/api/v1/sandboxes', { 'x-api-key': K.ci, 'content-type': 'application/json' }, 'POST', JSON.stringify({ tier: 'restricted' }));
    expect(created.status).toBe(201);
    const id = created.json().id as string;
    for (const p of [
      `/api/v1/sandboxes/${id}`,
      `/api/v1/sandboxes/${id}/`,
      `//api/v1/sandboxes/${id}`,
      `/api/v1/sandboxes/x/../${id}`,
      `/api/v1/sandboxes/${id}/intents/..`,
      `/api/v1/sandboxes/%2e/${id}`,
    ]) {
      const r = await raw(`DELETE ${p} HTTP/1.1\r\nHost: gateway\r\nx-api-key: ${K.ci}\r\nConnection: close\r\n\r\n`);
      expectRefusal(r.status, r.body, { status: 403, code: 'method_not_allowed' });
    }
    expect((await h1(`/api/v1/sandboxes/${id}`, { 'x-api-key': K.ci })).json().state).toBe('active');
  });
});

// ---- 3. methods -----------------------------------------------------------------------------

const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'];

describe('methods and method overrides', () => {
  for (const h of OVERRIDE_HEADERS) {
    book.case('gateway-input', `method: ${h}: DELETE on an operator's GET does not terminate`, async () => {
      const id = (
        await h1('/api/v1/sandboxes', { 'x-api-key': K.ci, 'content-type': 'application/json' }, 'POST', JSON.stringify({ tier: 'restricted' }))
      ).json().id;
      const r = await h1(`/api/v1/sandboxes/${id}`, { 'x-api-key': K.ci, [h]: 'DELETE' });
      expect(r.status).toBe(200);
      expect(r.json().state).toBe('active');
      const r2 = await h1(`/api/v1/sandboxes/${id}`, { 'x-api-key': K.ci, [h]: 'DELETE', 'content-type': 'application/json' }, 'POST', '{}');
      expect(r2.status).toBe(403);
      expect((await h1(`/api/v1/sandboxes/${id}`, { 'x-api-key': K.admin })).json().state).toBe('active');
    });
    book.case('gateway-input', `method: ${h}: POST on a reader's GET creates nothing`, async () => {
      const before = (await h1('/api/v1/status', { 'x-api-key': K.admin })).json().sandboxes.total;
      const r = await h1('/api/v1/sandboxes', { 'x-api-key': K.dashboard, [h]: 'POST' });
      expect(r.status).toBe(200);
      expect(Array.isArray(r.json().sandboxes)).toBe(true);
      expect((await h1('/api/v1/status', { 'x-api-key': K.admin })).json().sandboxes.total).toBe(before);
    });
  }
  book.case('gateway-input', 'method: _method=DELETE in the query does not terminate', async () => {
    const id = (await h1('/api/v1/sandboxes', { 'x-api-key': K.ci, 'content-type': 'application/json' }, 'POST', JSON.stringify({ tier: 'restricted' }))).json()
      .id;
    const r = await h1(`/api/v1/sandboxes/${id}?_method=DELETE`, { 'x-api-key': K.ci });
    expectRefusal(r.status, r.body, { status: 400, code: 'invalid_argument' });
    expect((await h1(`/api/v1/sandboxes/${id}`, { 'x-api-key': K.admin })).json().state).toBe('active');
  });
  book.case('gateway-input', 'method: the admin DELETE does terminate (control for the cases above)', async () => {
    const id = (await h1('/api/v1/sandboxes', { 'x-api-key': K.ci, 'content-type': 'application/json' }, 'POST', JSON.stringify({ tier: 'restricted' }))).json()
      .id;
    expect((await h1(`/api/v1/sandboxes/${id}`, { 'x-api-key': K.admin }, 'DELETE')).json().state).toBe('terminated');
  });
  const METHOD_CASES: [string, string, number, string][] = [
    ['TRACE by admin', `TRACE /api/v1/status HTTP/1.1\r\nHost: g\r\nx-api-key: {admin}\r\nConnection: close\r\n\r\n`, 403, 'method_not_allowed'],
    ['lowercase "get"', `get /api/v1/status HTTP/1.1\r\nHost: g\r\nx-api-key: {admin}\r\nConnection: close\r\n\r\n`, 400, 'bad_request'],
    ['unknown method FOO', `FOO /api/v1/status HTTP/1.1\r\nHost: g\r\nx-api-key: {admin}\r\nConnection: close\r\n\r\n`, 400, 'bad_request'],
    ['PROPFIND by reader', `PROPFIND /api/v1/status HTTP/1.1\r\nHost: g\r\nx-api-key: {dashboard}\r\nConnection: close\r\n\r\n`, 403, 'method_not_allowed'],
    ['HTTP/1.0 without Host', `GET /api/v1/status HTTP/1.0\r\nx-api-key: {admin}\r\n\r\n`, 426, 'upgrade_required'],
  ];
  for (const [name, req, status, code] of METHOD_CASES) {
    book.case('gateway-input', `method: ${name} -> ${status}`, async () => {
      const r = await raw(req.replace('{admin}', K.admin).replace('{dashboard}', K.dashboard));
      expect(r.status, r.text).toBe(status);
      if (status !== 426) expect(errorCode(r.body), r.text).toBe(code);
    });
  }
  book.case('gateway-input', 'method: CONNECT is never tunnelled (no 2xx, no bytes through)', async () => {
    const r = await raw(
      `CONNECT 127.0.0.1:${stack.ports.agentdHttp} HTTP/1.1\r\nHost: 127.0.0.1:${stack.ports.agentdHttp}\r\nx-api-key: ${K.admin}\r\n\r\nGET /api/v1/status HTTP/1.1\r\nHost: agentd\r\n\r\n`,
      2500,
    );
    expect(r.text).not.toMatch(/HTTP\/1\.1 2\d\d/);
    expect(r.text).not.toContain('"version"');
  });
  book.case('gateway-input', 'method: CONNECT over HTTP/2 is never tunnelled', async () => {
    // No route matches CONNECT: the gateway answers 404 JSON (a reset or a timeout fails the case).
    const r = answered(
      await h2Send(P(), {
        method: 'CONNECT',
        path: undefined as never,
        headers: { ':authority': `127.0.0.1:${stack.ports.agentdHttp}`, 'x-api-key': K.admin } as never,
        timeoutMs: 2500,
      }),
    );
    expectRefusal(r.status, r.body, { status: 404, code: 'not_found' });
    expect(r.body).not.toContain('"version"');
  });
});

// ---- 4. bodies and slow clients ---------------------------------------------------------------

describe('oversized bodies and slow clients', () => {
  const big100k = JSON.stringify({ tier: 'default', labels: { big: 'x'.repeat(100_000) } });
  book.case('gateway-input', 'body: 100 KB with content-length (HTTP/1.1) -> 413 JSON', async () => {
    const r = await h1('/api/v1/sandboxes', { 'x-api-key': K.admin, 'content-type': 'application/json' }, 'POST', big100k);
    expectRefusal(r.status, r.body, { status: 413, code: 'payload_too_large' });
  });
  book.case('gateway-input', 'body: 100 KB chunked, no content-length (HTTP/1.1) -> 413 JSON', async () => {
    const r = await raw(
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: g\r\nx-api-key: ${K.admin}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${(100_000).toString(16)}\r\n${'x'.repeat(100_000)}\r\n0\r\n\r\n`,
    );
    expectRefusal(r.status, r.body, { status: 413, code: 'payload_too_large' });
  });
  book.case('gateway-input', 'body: 100 KB over HTTP/2 -> 413 JSON', async () => {
    const r = await h2('/api/v1/sandboxes', { 'x-api-key': K.admin, 'content-type': 'application/json' }, 'POST', big100k);
    expectRefusal(r.status, r.body, { status: 413, code: 'payload_too_large' });
  });
  book.case('gateway-input', 'body: 100 KB without a key -> refused (413 or 401), never served', async () => {
    const r = await h1('/api/v1/sandboxes', { 'content-type': 'application/json' }, 'POST', big100k);
    expectRefusal(r.status, r.body, { status: [401, 413] });
  });
  book.case('gateway-input', 'body: 100 KB gRPC message -> not OK', async () => {
    const msg = Buffer.alloc(5 + 100_000);
    msg.writeUInt32BE(100_000, 1);
    const r = await h2('/agentd.v1.Agentd/CreateSandbox', { 'x-api-key': K.admin, 'content-type': 'application/grpc', te: 'trailers' }, 'POST', msg as never);
    const grpcStatus = String(r.headers['grpc-status'] ?? '');
    expect(r.status === 413 || (grpcStatus !== '' && grpcStatus !== '0'), JSON.stringify(r.headers)).toBe(true);
  });
  book.case('gateway-input', 'body: content-length and transfer-encoding together (smuggling) -> 400', async () => {
    const r = await raw(
      `POST /api/v1/sandboxes HTTP/1.1\r\nHost: g\r\nx-api-key: ${K.admin}\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`,
    );
    expectRefusal(r.status, r.body, { status: 400, code: 'bad_request' });
  });
  book.case('gateway-input', 'body: two different content-lengths -> 400', async () => {
    const r = await raw(`POST /api/v1/sandboxes HTTP/1.1\r\nHost: g\r\nx-api-key: ${K.admin}\r\ncontent-length: 2\r\ncontent-length: 20\r\n\r\n{}`);
    expectRefusal(r.status, r.body, { status: 400, code: 'bad_request' });
  });
  book.case('gateway-input', 'body: under the limit passes the gateway (agentd judges it: control)', async () => {
    const r = await h1(
      '/api/v1/sandboxes',
      { 'x-api-key': K.admin, 'content-type': 'application/json' },
      'POST',
      JSON.stringify({ tier: 'default', pad: 'x'.repeat(60_000) }),
    );
    expect(r.status).toBe(400);
    expect(r.json().error.code).toBe('invalid_argument');
  });
  book.case(
    'gateway-input',
    'slow headers: cut off by request_headers_timeout (10 s) with 408 JSON',
    async () => {
      const r = await slowHeaders;
      expect(r.closed, r.text).toBe(true);
      expect(r.status, r.text).toBe(408);
      expect(errorCode(r.body)).toBe('request_timeout');
      expect(r.elapsedMs).toBeGreaterThan(9_000);
      expect(r.elapsedMs).toBeLessThan(13_000);
    },
    20_000,
  );
});

// ---- 5. forged identity and policy headers (agentd replaced by a recorder) -------------------------

const FORGED: Record<string, string> = {
  'x-agentd-client-id': 'admin',
  'x-agentd-client-role': 'admin',
  'x-agentd-tier': 'unlimited',
  'x-agentd-policy': 'egress',
  'x-agentd-sandbox-id': 'sbx_000000000000000000000000',
  'x-agentd-sandbox-tier': 'admin',
  'x-sandbox-id': 'sbx_000000000000000000000000',
  'x-sandbox-tier': 'admin',
  'x-api-key-id': 'admin',
  'x-policy': 'egress',
  'x-envoy-original-path': '/api/v1/admin',
  'x-envoy-upstream-rq-timeout-ms': '1',
  'x-envoy-retry-on': '5xx',
  'x-envoy-internal': 'true',
};
/** Headers agentd may receive, and their only allowed values (the gateway's). */
const GATEWAY_SET: Record<string, string> = { 'x-agentd-client-id': 'dashboard', 'x-agentd-client-role': 'reader' };

function expectClean(seen: SeenRequest | undefined, opts: { authenticated: boolean }) {
  expect(seen, 'the request reached agentd').toBeDefined();
  expect(Object.keys(seen!.headers).length, 'agentd received headers').toBeGreaterThan(0);
  const h = seen!.headers;
  for (const name of Object.keys(FORGED)) {
    if (opts.authenticated && name in GATEWAY_SET) expect(h[name], name).toBe(GATEWAY_SET[name]);
    else expect(h[name], name).toBeUndefined();
  }
  expect(h['x-api-key'], 'the API key reached agentd').toBeUndefined();
  expect(h['authorization'], 'the API key reached agentd').toBeUndefined();
}

describe('forged identity and policy headers never reach agentd', () => {
  let seen: SeenRequest[] = [];
  let restore: () => Promise<void> = async () => undefined;
  beforeAll(async () => {
    ({ seen, restore } = await replaceAgentdWithRecorder(stack));
  });
  afterAll(async () => {
    await restore();
  });
  const last = (path: string) => [...seen].reverse().find((s) => s.path.startsWith(path));

  for (const [name, value] of Object.entries(FORGED)) {
    book.case('gateway-input', `forged ${name} (HTTP/1.1): stripped or replaced by the gateway's value`, async () => {
      const tag = `/api/v1/status?t=${encodeURIComponent(name)}-1`;
      const r = await h1(tag, { 'x-api-key': K.dashboard, [name]: value });
      expect(r.status).toBe(200);
      expectClean(last(tag), { authenticated: true });
    });
    book.case('gateway-input', `forged ${name} (HTTP/2): stripped or replaced by the gateway's value`, async () => {
      const tag = `/api/v1/status?t=${encodeURIComponent(name)}-2`;
      const r = await h2(tag, { 'x-api-key': K.dashboard, [name]: value });
      expect(r.status).toBe(200);
      expectClean(last(tag), { authenticated: true });
    });
  }
  book.case('gateway-input', 'forged: all at once, mixed case and duplicated (HTTP/1.1)', async () => {
    const tag = '/api/v1/status?t=all';
    const headers: Headers = { 'x-api-key': K.dashboard, 'X-Agentd-Client-Id': ['admin', 'root'], 'X-AGENTD-TIER': 'unlimited' };
    for (const [k, v] of Object.entries(FORGED)) headers[k.toUpperCase()] = v;
    const r = await h1(tag, headers);
    expect(r.status).toBe(200);
    const s = last(tag);
    expectClean(s, { authenticated: true });
    expect(s!.headers['x-agentd-client-id']).toBe('dashboard'); // one value, not a list
  });
  book.case('gateway-input', 'forged: gRPC metadata (x-agentd-client-id, x-policy, x-sandbox-tier) replaced or stripped', async () => {
    const headers: Record<string, string> = { 'x-api-key': K.dashboard, 'content-type': 'application/grpc', te: 'trailers' };
    for (const [k, v] of Object.entries(FORGED)) headers[k] = v;
    const r = await h2('/agentd.v1.Agentd/Status', headers, 'POST', Buffer.alloc(5) as never);
    expect(r.status).toBe(200);
    const s = [...seen].reverse().find((x) => x.transport === 'grpc');
    expect(s?.path).toBe('/agentd.v1.Agentd/Status');
    expectClean(s, { authenticated: true });
  });
  book.case('gateway-input', 'forged: on unauthenticated /health and /ready nothing identity-like is forwarded', async () => {
    for (const p of ['/health', '/ready']) {
      const r = await h1(p, { ...FORGED, 'x-api-key': K.admin });
      expect(r.status).toBe(200);
      const s = last(p)!;
      expect(s, `${p} reached agentd`).toBeDefined();
      expect(s.headers['x-agentd-client-id']).toBeUndefined();
      expect(s.headers['x-agentd-client-role']).toBeUndefined();
      for (const name of Object.keys(FORGED)) expect(s.headers[name], name).toBeUndefined();
    }
  });
  book.case('gateway-input', 'forged: a caller x-request-id is not what agentd receives', async () => {
    const tag = '/api/v1/status?t=reqid';
    expect((await h1(tag, { 'x-api-key': K.dashboard, 'x-request-id': 'attacker-chosen-id' })).status).toBe(200);
    expect(last(tag), 'the request reached agentd').toBeDefined();
    expect(last(tag)!.headers['x-request-id']).not.toBe('attacker-chosen-id');
  });
  book.case('gateway-input', 'forged: header names with underscores (x_agentd_client_id) are refused', async () => {
    const r = await h1('/api/v1/status?t=underscore', { 'x-api-key': K.dashboard, x_agentd_client_id: 'admin' });
    expectRefusal(r.status, r.body, { status: 400, code: 'bad_request' });
    expect(last('/api/v1/status?t=underscore')).toBeUndefined();
  });
  for (const h of OVERRIDE_HEADERS) {
    book.case('gateway-input', `method: agentd receives the authorized method, whatever ${h} says`, async () => {
      const tag = `/api/v1/status?t=m-${h}`;
      const r = await h1(tag, { 'x-api-key': K.dashboard, [h]: 'DELETE' });
      expect(r.status).toBe(200);
      expect(last(tag), 'the request reached agentd').toBeDefined();
      expect(last(tag)!.method).toBe('GET');
    });
  }
  book.case('gateway-input', 'path: agentd receives the normalised path OPA decided on', async () => {
    const cases: [string, string][] = [
      ['/api/v1/sandboxes/x/../../status?t=n1', '/api/v1/status?t=n1'],
      ['//api//v1//status?t=n2', '/api/v1/status?t=n2'],
      ['/api/v1/%2e%2e/v1/status?t=n3', '/api/v1/status?t=n3'],
      ['/api/v1/%73tatus?t=n4', '/api/v1/status?t=n4'],
      ['/api/v1/sandboxes/..\\status?t=n5', '/api/v1/status?t=n5'],
    ];
    for (const [sent, want] of cases) {
      const r = await raw(`GET ${sent} HTTP/1.1\r\nHost: g\r\nx-api-key: ${K.dashboard}\r\nConnection: close\r\n\r\n`);
      expect(r.status, sent).toBe(200);
      expect(last(want)?.path, sent).toBe(want);
    }
  });
});

// ---- 6. admin interface ---------------------------------------------------------------------

describe('the admin interface is unreachable', () => {
  const ADMIN_PATHS = ['/stats', '/config_dump', '/clusters', '/server_info', '/runtime', '/quitquitquit', '/healthcheck/fail', '/logging'];
  for (const p of ADMIN_PATHS) {
    book.case('gateway-input', `admin: ${p} through the gateway (admin key, POST and GET) -> 404`, async () => {
      for (const m of ['GET', 'POST']) {
        const r = await h1(p, { 'x-api-key': K.admin }, m);
        expectRefusal(r.status, r.body, { status: 404, code: 'not_found' });
      }
    });
  }
  const STATS_TRICKS = [
    '/config_dump',
    '/quitquitquit',
    '/stats/prometheus/../../quitquitquit',
    '/ready/../quitquitquit',
    '/stats/prometheus%2f..%2fquitquitquit',
    '/healthcheck/fail',
  ];
  for (const p of STATS_TRICKS) {
    book.case('gateway-input', `admin: ${p} on the stats-only listener (POST and GET) -> 404`, async () => {
      for (const m of ['GET', 'POST']) {
        const r = await rawRequest(stack.ports.gatewayStats, { method: m, path: p });
        expect(r.status, `${m} ${p}: ${r.body}`).toBe(404);
      }
    });
  }
  book.case('gateway-input', 'admin: after all that, both proxies still run and are ready', async () => {
    expect(stack.processes.gateway.running).toBe(true);
    expect((await rawRequest(stack.ports.gatewayStats, { path: '/ready' })).status).toBe(200);
    expect((await rawRequest(stack.ports.gatewayStats, { path: '/stats/prometheus' })).status).toBe(200);
    expect((await h1('/api/v1/status', { 'x-api-key': K.admin })).status).toBe(200);
  });
});

// ---- secret hygiene of this stack -------------------------------------------------------------

describe('secret hygiene (gateway stack)', () => {
  book.case('secret-hygiene', 'gateway stack: no API key, credential or signing key in any log, rendered file, bundle or data file', async () => {
    await new Promise((r) => setTimeout(r, 1200)); // access logs flush every second
    const secrets = checkedSecretsOf(stack, spec);
    const { scanned, findings } = scanStack(stack, secrets);
    expect(scanned.some((s) => s.startsWith('logs/opa'))).toBe(true);
    expect(scanned.some((s) => s.includes('agentd-bundle'))).toBe(true);
    expect(findings).toEqual([]);
  });
});
