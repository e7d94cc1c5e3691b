// The daemon as a child process: kill -9 loses nothing acknowledged (and running intents become
// interrupted); SIGTERM drains in-flight HTTP and gRPC requests, then exits 0; the grace period
// bounds the drain.
import { describe, afterAll, expect, it } from 'vitest';
import { cleanupAll, grpcClient, startChild, startEgress, testEnv, type ApiResponse } from './support.ts';

afterAll(cleanupAll);

describe('kill -9', () => {
  it('every acknowledged sandbox and intent record is there after a restart', async () => {
    const egress = await startEgress((req, res) => res.end(`echo ${req.url}`));
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url });
    const first = await startChild(env.env);

    const sandboxes: any[] = [];
    const intents: any[] = [];
    for (let i = 0; i < 6; i++) {
      const s = await first.api('POST', '/api/v1/sandboxes', { tier: i % 2 ? 'premium' : 'default', labels: { i: String(i) } });
      expect(s.status).toBe(201);
      sandboxes.push(s.json);
      const r = await first.api('POST', `/api/v1/sandboxes/${s.json.id}/intents`, {
        capability: 'http_fetch',
        params: { service: 'svc', method: 'GET', path: `/n/${i}` },
      });
      expect(r.status).toBe(200);
      intents.push(r.json);
    }
    const terminated = await first.api('DELETE', `/api/v1/sandboxes/${sandboxes[0].id}`);
    expect(terminated.status).toBe(200);
    // Acknowledged over gRPC too.
    const g = grpcClient(first.grpcAddress);
    const viaGrpc = (await g.call('CreateSandbox', { tier: 'standard' })).sandbox;
    g.close();

    first.proc.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = await startChild(env.env);
    const list = await second.api('GET', '/api/v1/sandboxes?limit=1000');
    const byId = new Map(list.json.sandboxes.map((s: any) => [s.id, s]));
    expect(byId.size).toBe(7);
    for (const s of sandboxes) {
      const { token: _token, ...view } = s;
      expect(byId.get(s.id)).toEqual(s.id === sandboxes[0].id ? terminated.json : view);
    }
    expect(byId.get(viaGrpc.id)).toMatchObject({ id: viaGrpc.id, tier: 'standard', state: 'active' });
    for (const i of intents) {
      const h = await second.api('GET', `/api/v1/sandboxes/${i.sandbox_id}/intents`);
      expect(h.json.intents).toHaveLength(1);
      const { headers: _h, body: _b, body_encoding: _e, dropped_headers: _d, ...record } = i;
      expect(h.json.intents[0]).toEqual(record);
    }
    second.proc.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('an intent running at the crash is interrupted after the restart', async () => {
    const egress = await startEgress(() => {
      // never answers
    });
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url });
    const first = await startChild(env.env);
    const s = (await first.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const arrived = egress.nextRequest();
    const pending = first
      .api('POST', `/api/v1/sandboxes/${s.id}/intents`, { capability: 'http_fetch', params: { service: 'svc', method: 'GET', path: '/hang' } })
      .catch((e: Error) => e);
    await arrived; // recorded as running before the request left
    first.proc.kill('SIGKILL');
    await first.exited;
    expect(await pending).toBeInstanceOf(Error);

    const second = await startChild(env.env);
    const h = await second.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents).toHaveLength(1);
    expect(h.json.intents[0]).toMatchObject({ path: '/hang', outcome: 'interrupted', status: null });
    expect(h.json.intents[0].completed_at).not.toBeNull();
    expect(second.logs.some((l) => l.includes('intents left running by a previous process are now interrupted'))).toBe(true);
    expect((await second.api('GET', '/api/v1/status')).json.intents.running).toBe(0);
    second.proc.kill('SIGKILL');
  });
});

describe('graceful shutdown', () => {
  it('SIGTERM: in-flight HTTP and gRPC intents complete, new connections are refused, exit 0', async () => {
    const egress = await startEgress((_req, res) => {
      setTimeout(() => res.end('slow answer'), 1200);
    });
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url, AGENTD_SHUTDOWN_GRACE_MS: '10000' });
    const child = await startChild(env.env);
    const s = (await child.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const g = grpcClient(child.grpcAddress);
    await g.call('Health', {}); // connect before the listener closes

    const arrivals = [egress.nextRequest()];
    const httpCall = child.api('POST', `/api/v1/sandboxes/${s.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'svc', method: 'GET', path: '/http' },
    });
    await arrivals[0];
    const grpcArrived = egress.nextRequest();
    const grpcCall = g.call('ExecuteIntent', { sandbox_id: s.id, capability: 'http_fetch', http_fetch: { service: 'svc', method: 'GET', path: '/grpc' } });
    await grpcArrived;

    const signalledAt = Date.now();
    child.proc.kill('SIGTERM');
    const [httpRes, grpcRes] = await Promise.all([httpCall, grpcCall]);
    expect((httpRes as ApiResponse).status).toBe(200);
    expect((httpRes as ApiResponse).json).toMatchObject({ outcome: 'ok', status: 200, body: 'slow answer' });
    expect(grpcRes).toMatchObject({ intent: { outcome: 'ok', status: 200 }, body: 'slow answer' });

    const exit = await child.exited;
    expect(exit.code).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(8000);
    // Nothing listens any more.
    await expect(fetch(`${child.httpUrl}/health`)).rejects.toThrow();
    const msgs = child.logs.map((l) => JSON.parse(l).msg);
    expect(msgs).toContain('shutting down: draining in-flight requests');
    expect(msgs.at(-1)).toBe('agentd stopped');

    // Both intents were stored as completed.
    const again = await startChild(env.env);
    const h = await again.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents.map((i: any) => [i.path, i.outcome])).toEqual([
      ['/http', 'ok'],
      ['/grpc', 'ok'],
    ]);
    again.proc.kill('SIGKILL');
  });

  it('the grace period bounds the drain: what still runs is interrupted, exit 0', async () => {
    const egress = await startEgress(() => {
      // never answers
    });
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url, AGENTD_SHUTDOWN_GRACE_MS: '300' });
    const child = await startChild(env.env);
    const s = (await child.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const arrived = egress.nextRequest();
    const call = child.api('POST', `/api/v1/sandboxes/${s.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'svc', method: 'GET', path: '/forever' },
    });
    await arrived;
    const signalledAt = Date.now();
    child.proc.kill('SIGTERM');
    const res = await call;
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe('interrupted');
    expect(res.json.intent.outcome).toBe('interrupted');
    expect((await child.exited).code).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(3000);

    const again = await startChild(env.env);
    const h = await again.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents[0]).toMatchObject({ path: '/forever', outcome: 'interrupted' });
    again.proc.kill('SIGKILL');
  });
});
