// Global rate limits on the harness (agentd:rateLimits.mode: global): two replicas of each proxy
// share Envoy's rate-limit service and its Redis, so a key gets its tier and a sandbox its budget
// once in total; an LLM stand-in reports token usage (plain and streamed) that drains the
// sandbox's token budget; and each proxy does what its failure mode says while the service or
// Redis is down.
import { shippedSpecWith } from '../../scripts/local/fixtures.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, type Stack } from '../../scripts/local/stack.ts';
import { egressCall, rawRequest, type RawResponse } from '../../scripts/local/clients.ts';
import { sleep } from '../../scripts/local/processes.ts';

/**
 * The shipped policy with small numbers: the dashboard key 30 requests per minute and per hour,
 * 1,000 tokens per hour for a standard sandbox, 5 requests per minute for a premium one.
 */
function testSpec() {
  return shippedSpecWith({
    rateLimitTiers: [[/default:\n\s+requests_per_minute: 60\n\s+requests_per_hour: 1800/, 'default:\n    requests_per_minute: 30\n    requests_per_hour: 30']],
    sandboxTiers: [
      ['{tokens_per_hour: 200000, tokens_per_day: 1000000}', '{tokens_per_hour: 1000, tokens_per_day: 5000}'],
      ['requests_per_minute: 300', 'requests_per_minute: 5'],
    ],
  });
}

const spec = testSpec();
let stack: Stack;

const api = (port: number, key: string, method: string, path: string, body?: object) =>
  rawRequest(port, {
    method,
    path,
    headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });

async function sandbox(tier: string): Promise<{ id: string; token: string }> {
  const r = await api(stack.ports.gateway, stack.apiKeys['admin']!, 'POST', '/api/v1/sandboxes', { tier });
  expect(r.status, r.body).toBe(201);
  return r.json();
}

/** The service's windows are aligned to the clock: start a test with enough of its window left (a minute's, an hour's). */
async function awayFromWindowEdge(windowSeconds = 60, needSeconds = 20): Promise<void> {
  const left = windowSeconds - ((Date.now() / 1000) % windowSeconds);
  if (left < needSeconds) await sleep(left * 1000 + 200);
}

/** The requests an egress replica sent the rate-limit service, from its stats listener. */
async function rateLimitCalls(statsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${statsPort}/stats/prometheus`)).text();
  const m = /^envoy_cluster_upstream_rq_total\{envoy_cluster_name="ratelimit"\} (\d+)$/m.exec(text);
  expect(m, 'no request count of the ratelimit cluster').not.toBeNull();
  return Number(m![1]);
}

/** An LLM call through the egress proxy, then waits for its usage to be charged (the rate-limit call made when the stream ends). */
async function llmCall(
  port: number,
  statsPort: number,
  token: string,
  service: 'openai' | 'anthropic',
  usage: { input: number; output: number },
  stream: boolean,
) {
  const before = await rateLimitCalls(statsPort);
  const r = await egressCall(port, service, token, {
    method: 'POST',
    path: service === 'openai' ? '/v1/chat/completions' : '/v1/messages',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: `${service}-test-model`, stream, standin_usage: usage }),
  });
  if (r.status === 200) {
    // Two calls per request: the check on arrival, the charge at the end of the stream.
    const deadline = Date.now() + 5000;
    while ((await rateLimitCalls(statsPort)) < before + 2) {
      expect(Date.now(), 'the usage charge never reached the rate-limit service').toBeLessThan(deadline);
      await sleep(20);
    }
  }
  return r;
}

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-gl-')), globalRateLimits: {} });
}, 120_000);
afterAll(async () => {
  await stack?.stop();
});

describe('two gateway replicas share one rate-limit service', () => {
  it('give a key exactly its tier in total, not its tier per replica', async () => {
    const second = await stack.startReplica('gateway');
    const key = stack.apiKeys['dashboard']!;
    const statuses: number[] = [];
    let limited: RawResponse | undefined;
    for (let i = 0; i < 40; i++) {
      const r = await api(i % 2 === 0 ? stack.ports.gateway : second.port, key, 'GET', '/api/v1/sandboxes');
      statuses.push(r.status);
      if (r.status === 429) limited = r;
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(30);
    expect(statuses.filter((s) => s === 429)).toHaveLength(10);
    // Both replicas refused: the count is shared, not split.
    expect(statuses.slice(30).every((s) => s === 429)).toBe(true);
    expect(limited!.headers['content-type']).toContain('application/json');
    const error = limited!.json().error;
    expect(error.code).toBe('rate_limited');
    expect(error.limit).toContain('name="requests per');
    expect(Number(error.reset_seconds)).toBeGreaterThan(0);
    expect(limited!.headers['x-ratelimit-remaining']).toBe('0');
  });

  it('keeps health and readiness out of the limits', async () => {
    for (let i = 0; i < 5; i++) expect((await rawRequest(stack.ports.gateway, { method: 'GET', path: '/health' })).status).toBe(200);
  });
});

describe('two egress replicas share a sandbox budget', () => {
  it('give a sandbox its requests per minute once in total', async () => {
    const second = await stack.startReplica('egress');
    const sbx = await sandbox('restricted');
    await awayFromWindowEdge();
    const statuses: number[] = [];
    for (let i = 0; i < 14; i++) {
      const r = await egressCall(i % 2 === 0 ? stack.ports.egress : second.port, 'httpbin', sbx.token, { path: '/get' });
      statuses.push(r.status);
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(4);
  });

  it('charge the usage an LLM reports, plain and streamed, until the token budget refuses with 429', async () => {
    const second = await stack.startReplica('egress');
    const sbx = await sandbox('standard');
    await awayFromWindowEdge(3600);
    const a = { port: stack.ports.egress, stats: stack.ports.egressStats };
    const b = { port: second.port, stats: second.statsPort };
    // 300 + 200 in one JSON body, through one replica.
    let r = await llmCall(a.port, a.stats, sbx.token, 'openai', { input: 300, output: 200 }, false);
    expect(r.status, r.body).toBe(200);
    expect(r.json().usage.total_tokens).toBe(500);
    // 250 + 200 streamed, through the other: 950 of 1,000 spent, still under the budget.
    r = await llmCall(b.port, b.stats, sbx.token, 'openai', { input: 250, output: 200 }, true);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toContain('text/event-stream');
    expect(r.body).toContain('data: [DONE]');
    r = await llmCall(a.port, a.stats, sbx.token, 'openai', { input: 100, output: 100 }, true);
    expect(r.status).toBe(200);
    // 1,150 spent: the next call is refused before it reaches the upstream, on either replica.
    stack.upstream.clear();
    for (const replica of [a, b]) {
      const refused = await llmCall(replica.port, replica.stats, sbx.token, 'openai', { input: 1, output: 1 }, false);
      expect(refused.status, refused.body).toBe(429);
      expect(refused.headers['content-type']).toContain('application/json');
      const error = refused.json().error;
      expect(error.code).toBe('token_budget_exhausted');
      expect(error.limit).toContain('name="tokens per hour to openai"');
      const reset = Number(error.reset_seconds);
      expect(reset).toBeGreaterThan(0);
      expect(reset).toBeLessThanOrEqual(3600);
    }
    expect(stack.upstream.received).toHaveLength(0);
    // The budget is per service: Anthropic's (streamed, usage in message_start and message_delta) is untouched.
    r = await llmCall(b.port, b.stats, sbx.token, 'anthropic', { input: 600, output: 300 }, true);
    expect(r.status).toBe(200);
    r = await llmCall(a.port, a.stats, sbx.token, 'anthropic', { input: 50, output: 100 }, false);
    expect(r.status).toBe(200);
    const refused = await llmCall(a.port, a.stats, sbx.token, 'anthropic', { input: 1, output: 1 }, false);
    expect(refused.status).toBe(429);
    expect(refused.json().error.limit).toContain('name="tokens per hour to anthropic"');
  });

  it('a request limit on an LLM service refuses as rate_limited, naming the request limit, not a token budget', async () => {
    const sbx = await sandbox('premium');
    await awayFromWindowEdge();
    const statuses: number[] = [];
    let refused: RawResponse | undefined;
    for (let i = 0; i < 6; i++) {
      const r = await egressCall(stack.ports.egress, 'anthropic', sbx.token, { method: 'POST', path: '/v1/messages', body: '{}' });
      statuses.push(r.status);
      if (r.status === 429) refused = r;
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    const error = refused!.json().error;
    expect(error.code).toBe('rate_limited');
    expect(error.limit).toContain('name="requests per minute to anthropic"');
    expect(error.limit).not.toContain('tokens per');
  });

  it('counts the tokens as gen_ai.client.token.usage by type, provider, model, service and tier, never by sandbox', async () => {
    const r = await fetch(`http://127.0.0.1:${stack.ports.egressStats}/stats/prometheus`);
    const text = await r.text();
    const sums = [...text.matchAll(/^envoy_egress_gen_ai_client_token_usage\{([^}]*)\} (\d+)$/gm)].map((m) => ({ labels: m[1]!, value: Number(m[2]) }));
    expect(sums.length).toBeGreaterThan(0);
    // The calls that reported usage (the others are estimates, with model "unknown").
    const sum = (type: string, service: string) =>
      sums
        .filter((s) => s.labels.includes(`gen_ai_token_type="${type}"`) && s.labels.includes(`service="${service}"`) && s.labels.includes(`-test-model"`))
        .reduce((t, s) => t + s.value, 0);
    // This replica saw openai: 300 + 200 (plain), 100 + 100 (streamed); anthropic: 50 + 100.
    expect(sum('input', 'openai')).toBe(400);
    expect(sum('output', 'openai')).toBe(300);
    expect(sum('input', 'anthropic')).toBe(50);
    expect(sum('output', 'anthropic')).toBe(100);
    const openai = sums.find((s) => s.labels.includes('service="openai"'))!;
    expect(openai.labels).toContain('gen_ai_provider_name="openai"');
    expect(openai.labels).toContain('gen_ai_response_model="openai-test-model"');
    expect(openai.labels).toContain('tier="standard"');
    expect(text).not.toMatch(/sandbox/);
  });
});

describe('when the rate-limit service or its Redis is down', () => {
  it('the gateway lets keys through (fails open) and the egress proxy refuses with 503 (fails closed), as configured', async () => {
    const sbx = await sandbox('restricted');
    for (const down of ['redis', 'ratelimit'] as const) {
      await stack.limiter![down].stop();
      try {
        const g = await api(stack.ports.gateway, stack.apiKeys['ci']!, 'GET', '/api/v1/sandboxes');
        expect(g.status, `gateway with ${down} down: ${g.body}`).toBe(200);
        // A wrong key is still refused: only the limit fails open, never authentication.
        expect((await api(stack.ports.gateway, 'agk_wrong', 'GET', '/api/v1/sandboxes')).status).toBe(401);
        const e = await egressCall(stack.ports.egress, 'httpbin', sbx.token, { path: '/get' });
        expect(e.status, `egress with ${down} down: ${e.body}`).toBe(503);
        expect(e.json().error.code).toBe('rate_limit_unavailable');
      } finally {
        await stack.limiter![down].start();
      }
    }
    // Back: both pass again.
    expect((await egressCall(stack.ports.egress, 'httpbin', sbx.token, { path: '/get' })).status).toBe(200);
  });
});
