// Proxy changes without a restart, on the local stack: a gateway setting (the body limit) and a
// rotated egress credential are installed as a deploy installs them (a new revision of the
// proxy's live directory, one atomic swap), while traffic runs. The Envoys keep their process,
// every request of the steady traffic is answered 200 (new connections are accepted throughout),
// a request in flight during the change completes, and the change is in force within seconds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentialValueFile } from '../../components/render/envoy/egress.ts';
import { LIVE_FILES } from '../../components/render/envoy/common.ts';
import { rawRequest, steadyTraffic, type RawResponse } from '../../scripts/local/clients.ts';
import { shippedSpec } from '../../scripts/local/fixtures.ts';
import { sleep } from '../../scripts/local/processes.ts';
import { startStack, type Stack } from '../../scripts/local/stack.ts';

const spec = shippedSpec();
let stack: Stack;

const api = (method: string, path: string, body?: object | string, timeoutMs = 10_000): Promise<RawResponse> =>
  rawRequest(stack.ports.gateway, {
    method,
    path,
    timeoutMs,
    headers: { 'x-api-key': stack.apiKeys['admin']!, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: typeof body === 'string' ? body : body ? JSON.stringify(body) : undefined,
  });

async function within(ms: number, ok: () => Promise<boolean>, everyMs = 50): Promise<number | undefined> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await ok()) return Date.now() - t0;
    await sleep(everyMs);
  }
  return undefined;
}

beforeAll(async () => {
  stack = await startStack({ spec, dir: mkdtempSync(join(tmpdir(), 'agentd-live-')) });
});
afterAll(async () => {
  await stack?.stop();
});

describe('proxy changes without a restart', () => {
  it('a gateway setting (the body limit) changes in place under traffic: no request fails, one in flight completes, the gateway keeps its process', async () => {
    const pid = stack.processes.gateway.pid;
    const body = JSON.stringify({ tier: 'standard', padding: 'x'.repeat(4096) });
    // Before: a 4 KiB body is within the harness's 64 KiB limit (agentd answers; no 413).
    expect((await api('POST', '/api/v1/sandboxes', body)).status).not.toBe(413);
    const sbx = (await api('POST', '/api/v1/sandboxes', { tier: 'standard' })).json() as { id: string };
    // A request in flight across the change: an intent the stand-in answers 1.5 s late.
    const slow = api(
      'POST',
      `/api/v1/sandboxes/${sbx.id}/intents`,
      { capability: 'http_fetch', params: { service: 'httpbin', method: 'GET', path: '/delay/1500' } },
      20_000,
    );
    // A new connection per request, about 100 req/s.
    const traffic = steadyTraffic(async () => (await api('GET', '/api/v1/status')).status === 200, 10);
    await sleep(300);
    stack.reconfigure((input) => ({ ...input, gateway: { ...input.gateway, maxRequestBytes: 1024 } }));
    const inForceMs = await within(5_000, async () => (await api('POST', '/api/v1/sandboxes', body)).status === 413);
    await sleep(1_000);
    const sent = await traffic.stop();
    const slowDone = await slow;
    console.log(`gateway body limit changed in place: in force after ${inForceMs} ms; ${sent.sent} requests during it, ${sent.failed} not 200`);
    expect(inForceMs, 'the new limit in force within 5 s').toBeDefined();
    expect(sent.sent).toBeGreaterThan(50);
    expect(sent.failed, 'requests that failed during the change').toBe(0);
    expect(slowDone.status, slowDone.body).toBe(200);
    expect(slowDone.json().outcome).toBe('ok');
    expect(stack.processes.gateway.pid, 'the gateway was not restarted').toBe(pid);
  });

  it('an egress credential rotates in place: the upstream gets the new value on the next call, the egress proxy keeps its process', async () => {
    const pid = stack.processes.egress.pid;
    const sbx = (await api('POST', '/api/v1/sandboxes', { tier: 'standard' })).json() as { id: string };
    const call = async () => {
      stack.upstream.clear();
      const r = await api('POST', `/api/v1/sandboxes/${sbx.id}/intents`, {
        capability: 'http_fetch',
        params: { service: 'github', method: 'GET', path: '/repos/o/r/issues' },
      });
      expect(r.status, r.body).toBe(200);
      expect(stack.upstream.received, r.body).toHaveLength(1);
      return stack.upstream.received[0]!.headers['authorization'];
    };
    const c = spec.egressServices['github']!.credential!;
    expect(await call()).toBe(`${c.prefix}${stack.credentials['github']}`);
    const rotated = `github-rotated-${Date.now()}`;
    stack.reconfigure((input) => input, { egress: { [credentialValueFile('github')]: rotated } });
    // One call every 250 ms: the sandbox tier allows 60 a minute.
    const inForceMs = await within(
      5_000,
      async () => {
        return (await call()) === `${c.prefix}${rotated}`;
      },
      250,
    );
    console.log(`egress credential rotated in place: in force after ${inForceMs} ms`);
    expect(inForceMs, 'the new credential in force within 5 s').toBeDefined();
    expect(stack.processes.egress.pid, 'the egress proxy was not restarted').toBe(pid);
  });
});

describe('listeners and clusters load from two files', () => {
  it('a listener that arrives before the cluster it routes to is taken, not refused for the missing cluster', async () => {
    const lds = async () => {
      const text = await (await fetch(`http://127.0.0.1:${stack.ports.egressAdmin}/stats?filter=^listener_manager\\.lds\\.update_`)).text();
      const stat = (name: string) => Number(new RegExp(`listener_manager\\.lds\\.${name}: (\\d+)`).exec(text)?.[1]);
      return { success: stat('update_success'), rejected: stat('update_rejected') };
    };
    const before = await lds();
    expect(before.success).toBeGreaterThan(0);
    const withExtra = { ...spec, egressServices: { ...spec.egressServices, extra: { ...spec.egressServices['httpbin']!, id: 'extra' } } };
    // The new listener (a route to the cluster of service `extra`) while the clusters stay as they were.
    stack.reconfigure((input) => input, {}, { spec: withExtra, keepFiles: [LIVE_FILES.cds] });
    const takenMs = await within(5_000, async () => (await lds()).success > before.success);
    expect(takenMs, 'the listener update was applied').toBeDefined();
    expect((await lds()).rejected, 'listener updates refused').toBe(before.rejected);
  });
});
