// Load: 50 concurrent clients. Rate limits admit each tier's budget, within token-bucket
// granularity, per API key at the gateway and per sandbox x service at the egress; and no
// request is ever served under another tenant's identity: what agentd is told about the caller,
// the gateway access log's client_id, the egress access log's sandbox_id and the credential the
// upstream receives always match the key, token and service of that very request.
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as h2connect } from 'node:http2';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { egressCall, rawRequest, secretsFoundIn, type RawResponse } from '../../scripts/local/clients.ts';
import { CaseBook, errorCode, h2Send, policyVariant, replaceAgentdWithRecorder, scanStack, secretsOf, sleep } from './support.ts';

const book = new CaseBook('load');
const CONCURRENCY = 50;
const pad = (n: number) => String(n).padStart(2, '0');
/** Tenants: 8 at the default tier (60/min), 8 at standard (120/min), 12 premium ones for the identity runs. */
const LIMITED = [
  ...Array.from({ length: 8 }, (_, i) => ({ id: `tenant-d${pad(i)}`, tier: 'default', perMinute: 60 })),
  ...Array.from({ length: 8 }, (_, i) => ({ id: `tenant-s${pad(i)}`, tier: 'standard', perMinute: 120 })),
];
const PREMIUM = Array.from({ length: 12 }, (_, i) => ({ id: `tenant-p${pad(i)}`, tier: 'premium' }));
const spec = policyVariant((d) => {
  for (const c of [...LIMITED, ...PREMIUM]) d.clients.clients.push({ id: c.id, description: 'load test tenant', role: 'operator', rate_limit_tier: c.tier });
});
let stack: Stack;
const tokens: string[] = [];

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-sec-load-')) });
});
afterAll(async () => {
  try {
    await stack?.stop();
  } finally {
    book.flush();
  }
});

/** Runs every task with at most `n` in flight; never rejects (a failed task yields its error). */
async function pool<T>(tasks: (() => Promise<T>)[], n = CONCURRENCY): Promise<(T | Error)[]> {
  const out: (T | Error)[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        out[i] = await tasks[i]!().catch((e: Error) => e);
      }
    }),
  );
  return out;
}
const gw = (key: string, path = '/api/v1/status', extra: Record<string, string> = {}) =>
  rawRequest(stack.ports.gateway, { path, headers: { 'x-api-key': key, ...extra } });
const shuffle = <T>(xs: T[]): T[] => {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
};
/** Tokens a bucket of `perMinute` can refill in `ms` (continuous refill), plus one for rounding. */
const refill = (perMinute: number, ms: number) => Math.ceil((perMinute * ms) / 60_000) + 1;

// ---- the gateway: budget per key ---------------------------------------------------------------

describe('gateway rate limits per key under 50 concurrent clients', () => {
  let results: { client: (typeof LIMITED)[number]; r: RawResponse | Error }[] = [];
  let elapsed = 0;
  beforeAll(async () => {
    const tasks = shuffle(LIMITED.flatMap((c) => Array.from({ length: c.perMinute + 30 }, () => c))).map((c) => async () => ({
      client: c,
      r: await gw(stack.apiKeys[c.id]!),
    }));
    const t0 = Date.now();
    results = (await pool(tasks)) as typeof results;
    elapsed = Date.now() - t0;
  });

  book.case(
    'load',
    `gateway: ${LIMITED.reduce((a, c) => a + c.perMinute + 30, 0)} requests from 16 keys at concurrency ${CONCURRENCY}: every one answered (200 or 429), none lost`,
    () => {
      expect(results.filter((x) => x instanceof Error || x.r instanceof Error)).toEqual([]);
      for (const { r } of results) expect([200, 429]).toContain((r as RawResponse).status);
      const admitted = Object.fromEntries(
        LIMITED.map((c) => [c.id, results.filter((x) => x.client.id === c.id && (x.r as RawResponse).status === 200).length]),
      );
      console.log(`gateway burst: ${results.length} requests in ${elapsed} ms; admitted per key: ${JSON.stringify(admitted)}`);
    },
  );
  for (const c of LIMITED) {
    book.case('load', `gateway: ${c.id} (${c.tier}, ${c.perMinute}/min) admitted its budget, within token-bucket granularity`, () => {
      const mine = results.filter((x) => x.client.id === c.id).map((x) => x.r as RawResponse);
      const admitted = mine.filter((r) => r.status === 200).length;
      expect(admitted, `elapsed ${elapsed} ms`).toBeGreaterThanOrEqual(c.perMinute);
      expect(admitted, `elapsed ${elapsed} ms`).toBeLessThanOrEqual(c.perMinute + refill(c.perMinute, elapsed));
      for (const r of mine.filter((x) => x.status === 429)) {
        expect(errorCode(r.body)).toBe('rate_limited');
        expect(r.headers['x-ratelimit-limit']).toBe(String(c.perMinute));
      }
    });
  }
  book.case('load', "gateway: every admitted request was logged under the key's own client id (access log, by request id)", async () => {
    await sleep(1200);
    const byRequestId = new Map<string, string>();
    for (const l of stack.processes.gateway.jsonLines()) if (l.request_id && l.status === 200) byRequestId.set(l.request_id, l.client_id);
    let checked = 0;
    for (const { client, r } of results) {
      const res = r as RawResponse;
      if (res.status !== 200) continue;
      const rid = String(res.headers['x-request-id']);
      expect(byRequestId.get(rid), `request ${rid} of ${client.id}`).toBe(client.id);
      checked++;
    }
    expect(checked).toBeGreaterThan(LIMITED.reduce((a, c) => a + c.perMinute, 0) - 1);
  });
  book.case('load', "gateway: an unlimited key is not slowed by the others' exhaustion", async () => {
    const rs = await pool(Array.from({ length: 100 }, () => () => gw(stack.apiKeys['admin']!)));
    expect(rs.filter((r) => !(r instanceof Error) && r.status === 200)).toHaveLength(100);
  });
});

// ---- the gateway: identity under concurrency (agentd replaced by a recorder) ---------------------------

describe("no request is served under another tenant's identity (what agentd is told)", () => {
  let restore: () => Promise<void> = async () => undefined;
  beforeAll(async () => {
    ({ restore } = await replaceAgentdWithRecorder(stack));
  });
  afterAll(async () => {
    await restore();
  });
  const seenClient = (body: string) => JSON.parse(body).recorded.headers['x-agentd-client-id'];

  book.case(
    'load',
    `identity: 12 tenants x 40 requests over HTTP/1.1 at concurrency ${CONCURRENCY}, each forging another tenant's id: agentd always sees the key's own`,
    async () => {
      const tasks = shuffle(PREMIUM.flatMap((c, i) => Array.from({ length: 40 }, (_, n) => ({ c, n, forged: PREMIUM[(i + 1) % PREMIUM.length]!.id })))).map(
        ({ c, n, forged }) =>
          async () => {
            const r = await gw(stack.apiKeys[c.id]!, `/api/v1/status?who=${c.id}&n=${n}`, { 'x-agentd-client-id': forged });
            return { c, r };
          },
      );
      const rs = await pool(tasks);
      const wrong: string[] = [];
      for (const x of rs) {
        expect(x).not.toBeInstanceOf(Error);
        const { c, r } = x as { c: (typeof PREMIUM)[number]; r: RawResponse };
        expect(r.status).toBe(200);
        const recorded = JSON.parse(r.body).recorded;
        if (seenClient(r.body) !== c.id || !recorded.path.includes(`who=${c.id}&`)) wrong.push(`${c.id} -> ${seenClient(r.body)}`);
      }
      expect(wrong).toEqual([]);
    },
  );
  book.case('load', "identity: 12 tenants multiplexed as 480 streams on 4 shared HTTP/2 connections: each stream is its own key's", async () => {
    const sessions = Array.from({ length: 4 }, () => h2connect(`http://127.0.0.1:${stack.ports.gateway}`));
    try {
      const tasks = shuffle(PREMIUM.flatMap((c) => Array.from({ length: 40 }, (_, n) => ({ c, n })))).map(({ c, n }, i) => async () => {
        const r = await h2Send(stack.ports.gateway, {
          session: sessions[i % sessions.length],
          path: `/api/v1/status?who=${c.id}&n=${n}`,
          headers: { 'x-api-key': stack.apiKeys[c.id]!, 'x-agentd-client-id': 'admin' },
        });
        return { c, r };
      });
      const rs = await pool(tasks);
      const wrong: string[] = [];
      for (const x of rs) {
        const { c, r } = x as { c: (typeof PREMIUM)[number]; r: { status: number; body: string } };
        expect(r.status, r.body).toBe(200);
        if (seenClient(r.body) !== c.id) wrong.push(`${c.id} -> ${seenClient(r.body)}`);
      }
      expect(wrong).toEqual([]);
    } finally {
      for (const s of sessions) s.close();
    }
  });
  book.case('load', 'identity: valid keys interleaved with invalid, disabled and missing ones: only valid ones reach agentd, each as itself', async () => {
    const kinds = ['valid', 'invalid', 'disabled', 'missing'] as const;
    const tasks = shuffle(Array.from({ length: 400 }, (_, i) => ({ kind: kinds[i % 4]!, c: PREMIUM[i % PREMIUM.length]! }))).map(({ kind, c }) => async () => {
      const key = { valid: stack.apiKeys[c.id]!, invalid: `${stack.apiKeys[c.id]!}x`, disabled: stack.apiKeys['retired']!, missing: '' }[kind];
      const r = await rawRequest(stack.ports.gateway, {
        path: `/api/v1/status?who=${c.id}`,
        headers: key ? { 'x-api-key': key, 'x-agentd-client-id': c.id } : { 'x-agentd-client-id': c.id },
      });
      return { kind, c, r };
    });
    for (const x of await pool(tasks)) {
      const { kind, c, r } = x as { kind: (typeof kinds)[number]; c: (typeof PREMIUM)[number]; r: RawResponse };
      if (kind === 'valid') {
        expect(r.status).toBe(200);
        expect(seenClient(r.body)).toBe(c.id);
      } else {
        expect(r.status, kind).toBe(kind === 'disabled' ? 403 : 401);
        expect(r.body).not.toContain('recorded');
      }
    }
  });
});

// ---- the egress: budget per sandbox x service, identity per token ---------------------------------

describe('egress rate limits per sandbox x service, and identity per token, under 50 concurrent clients', () => {
  type Sbx = { id: string; token: string; tier: string };
  let restricted: Sbx[] = [];
  let standard: Sbx[] = [];
  let results: { sbx: Sbx; service: string; tag: string; r: RawResponse }[] = [];
  let elapsed = 0;
  const tagPath = (service: string, tag: string) =>
    ({ httpbin: `/anything/${tag}`, openai: `/v1/models/${tag}`, github: `/repos/o/r/issues/${tag}` })[service]!;
  const create = async (tier: string, key: string): Promise<Sbx> => {
    const r = await rawRequest(stack.ports.gateway, {
      method: 'POST',
      path: '/api/v1/sandboxes',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ tier }),
    });
    expect(r.status, r.body).toBe(201);
    tokens.push(r.json().token);
    return { ...r.json(), tier };
  };
  beforeAll(async () => {
    restricted = await Promise.all(Array.from({ length: 10 }, (_, i) => create('restricted', stack.apiKeys[PREMIUM[i % PREMIUM.length]!.id]!)));
    standard = await Promise.all(Array.from({ length: 4 }, (_, i) => create('standard', stack.apiKeys[PREMIUM[i]!.id]!)));
    const plan = [
      ...restricted.flatMap((s) => Array.from({ length: 16 }, (_, n) => ({ sbx: s, service: 'httpbin', n }))),
      ...standard.flatMap((s) => ['openai', 'github'].flatMap((service) => Array.from({ length: 75 }, (_, n) => ({ sbx: s, service, n })))),
    ];
    stack.upstream.clear();
    const t0 = Date.now();
    results = (await pool(
      shuffle(plan).map(({ sbx, service, n }) => async () => {
        const tag = `${sbx.id}-${service}-${n}`;
        const r = await egressCall(stack.ports.egress, service, sbx.token, { path: tagPath(service, tag) });
        return { sbx, service, tag, r };
      }),
    )) as typeof results;
    elapsed = Date.now() - t0;
  });

  book.case('load', 'egress: 760 requests from 14 sandboxes on 3 services: every one answered (200 or 429), none lost', () => {
    expect(results.filter((x) => x instanceof Error)).toEqual([]);
    for (const { r } of results) expect([200, 429]).toContain(r.status);
    const admitted = (s: Sbx, service: string) => results.filter((x) => x.sbx.id === s.id && x.service === service && x.r.status === 200).length;
    console.log(
      `egress burst: ${results.length} requests in ${elapsed} ms; admitted: restricted/httpbin ${JSON.stringify(restricted.map((s) => admitted(s, 'httpbin')))}, standard/openai ${JSON.stringify(standard.map((s) => admitted(s, 'openai')))}, standard/github ${JSON.stringify(standard.map((s) => admitted(s, 'github')))}`,
    );
  });
  for (let i = 0; i < 10; i++) {
    book.case('load', `egress: restricted sandbox #${i} on httpbin admitted its 10/min, within token-bucket granularity`, () => {
      const s = restricted[i]!;
      const admitted = results.filter((x) => x.sbx.id === s.id && x.r.status === 200).length;
      expect(admitted, `elapsed ${elapsed} ms`).toBeGreaterThanOrEqual(10);
      expect(admitted, `elapsed ${elapsed} ms`).toBeLessThanOrEqual(10 + refill(10, elapsed));
    });
  }
  for (let i = 0; i < 4; i++) {
    for (const service of ['openai', 'github']) {
      book.case('load', `egress: standard sandbox #${i} on ${service} admitted its 60/min independently of its other service`, () => {
        const s = standard[i]!;
        const admitted = results.filter((x) => x.sbx.id === s.id && x.service === service && x.r.status === 200).length;
        expect(admitted, `elapsed ${elapsed} ms`).toBeGreaterThanOrEqual(60);
        expect(admitted, `elapsed ${elapsed} ms`).toBeLessThanOrEqual(60 + refill(60, elapsed));
      });
    }
  }
  book.case('load', 'egress: every access-log line names the sandbox of the token used and the service asked for (by tagged path)', async () => {
    await sleep(1200);
    const lines = stack.processes.egress.jsonLines().filter((l) => typeof l.path === 'string' && l.path.includes('sbx_'));
    const wrong: string[] = [];
    for (const { sbx, service, tag, r } of results) {
      const line = lines.find((l) => l.path === tagPath(service, tag));
      if (!line) {
        wrong.push(`${tag}: no log line`);
        continue;
      }
      if (line.sandbox_id !== sbx.id || line.service !== service || line.status !== r.status)
        wrong.push(`${tag}: logged ${line.sandbox_id}/${line.service}/${line.status}`);
    }
    expect(wrong).toEqual([]);
  });
  book.case('load', 'egress: every request the upstream received carries exactly the credential of the service it was for', () => {
    const byPath = new Map(results.map((x) => [tagPath(x.service, x.tag), x]));
    expect(stack.upstream.received.length).toBe(results.filter((x) => x.r.status === 200).length);
    const wrong: string[] = [];
    for (const q of stack.upstream.received) {
      const x = byPath.get(q.path);
      if (!x) {
        wrong.push(`unexpected ${q.path}`);
        continue;
      }
      const c = spec.egressServices[x.service]!.credential;
      // A service without a credential (httpbin) gets none; the others exactly their own.
      const others = Object.fromEntries(Object.entries(stack.credentials).filter(([id]) => id !== x.service));
      if (secretsFoundIn(JSON.stringify(q.headers), others).length > 0) wrong.push(`${q.path}: another service's credential`);
      if (c ? q.headers[c.header.toLowerCase()] !== `${c.prefix}${stack.credentials[x.service]}` : q.headers['authorization'] !== undefined)
        wrong.push(`${q.path}: wrong credential`);
    }
    expect(wrong).toEqual([]);
  });
});

describe('end to end: concurrent intents from many tenants through gateway, agentd and egress', () => {
  book.case('load', 'intents: 10 sandboxes of 10 tenants x 6 intents at concurrency 50: each recorded, logged and sent as its own sandbox', async () => {
    const sbxs = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const key = stack.apiKeys[PREMIUM[i]!.id]!;
        // Operators may create premium sandboxes (tier ceilings): premium reaches github.
        const r = await rawRequest(stack.ports.gateway, {
          method: 'POST',
          path: '/api/v1/sandboxes',
          headers: { 'x-api-key': key, 'content-type': 'application/json' },
          body: JSON.stringify({ tier: 'premium' }),
        });
        expect(r.status, r.body).toBe(201);
        tokens.push(r.json().token);
        return { id: r.json().id as string, key };
      }),
    );
    stack.upstream.clear();
    const plan = shuffle(sbxs.flatMap((s) => Array.from({ length: 6 }, (_, n) => ({ s, n }))));
    const rs = await pool(
      plan.map(({ s, n }) => async () => {
        const r = await rawRequest(stack.ports.gateway, {
          method: 'POST',
          path: `/api/v1/sandboxes/${s.id}/intents`,
          headers: { 'x-api-key': s.key, 'content-type': 'application/json' },
          body: JSON.stringify({ capability: 'http_fetch', params: { service: 'github', method: 'GET', path: `/repos/e2e/${s.id}/issues/${n}` } }),
        });
        return { s, n, r };
      }),
    );
    await sleep(1200);
    const lines = stack.processes.egress.jsonLines().filter((l) => typeof l.path === 'string' && l.path.startsWith('/repos/e2e/'));
    const wrong: string[] = [];
    for (const x of rs) {
      const { s, n, r } = x as { s: { id: string }; n: number; r: RawResponse };
      expect(r.status, r.body).toBe(200);
      const intent = r.json();
      if (intent.sandbox_id !== s.id || intent.status !== 200) wrong.push(`intent ${s.id}/${n}: ${intent.sandbox_id} ${intent.status}`);
      const line = lines.find((l) => l.path === `/repos/e2e/${s.id}/issues/${n}`);
      if (line?.sandbox_id !== s.id) wrong.push(`egress log ${s.id}/${n}: ${line?.sandbox_id}`);
    }
    expect(wrong).toEqual([]);
    expect(stack.upstream.received).toHaveLength(60);
  });
});

// ---- secret hygiene of this stack -------------------------------------------------------------

describe('secret hygiene (load stack)', () => {
  book.case('secret-hygiene', 'load stack: no API key (30 of them), credential or signing key in any log, rendered file, bundle or data file', async () => {
    await sleep(1200);
    const { findings } = scanStack(stack, secretsOf(stack));
    expect(findings).toEqual([]);
  });
  book.case('secret-hygiene', 'load stack: no sandbox token in any log', () => {
    const { findings } = scanStack(stack, Object.fromEntries(tokens.map((t, i) => [`sandbox token ${i}`, t])));
    expect(findings.filter((f) => f.where.startsWith('logs/'))).toEqual([]);
  });
});
