// The esbuild bundle: built here into a directory outside the repository (so no node_modules can
// be found), it starts, answers HTTP, loads its protos from next to itself (gRPC, health,
// reflection), and runs an intent.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBundle, type BuildResult } from '../../agentd/scripts/build.ts';
import { PROTO_PATHS } from '../../agentd/src/contract.ts';
import { cleanupAll, grpcClient, startChild, startEgress, tempDir, testEnv, type Child } from './support.ts';

let bundle: BuildResult;
let child: Child;

beforeAll(async () => {
  bundle = await buildBundle({ outDir: path.join(tempDir('agentd-bundle-'), 'dist') });
  const egress = await startEgress((req, res) => res.end(`bundle saw ${req.headers.host}`));
  child = await startChild(testEnv({ AGENTD_EGRESS_URL: egress.url }).env, bundle.outfile);
});
afterAll(cleanupAll);

describe('dist/agentd.mjs', () => {
  it('is one file with the protos next to it', () => {
    expect(bundle.bytes).toBeGreaterThan(100_000);
    for (const p of Object.values(PROTO_PATHS)) expect(existsSync(path.join(bundle.outDir, p)), p).toBe(true);
    expect(existsSync(path.join(bundle.protoDir, 'grpc/reflection/v1/reflection.proto'))).toBe(true);
  });

  it('starts and answers /health and /ready', async () => {
    expect((await child.api('GET', '/health')).json).toEqual({ status: 'ok' });
    expect((await child.api('GET', '/ready')).status).toBe(200);
    expect((await child.api('GET', '/openapi.json')).json.paths['/api/v1/sandboxes']).toBeDefined();
  });

  it('runs an intent', async () => {
    const s = (await child.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const r = await child.api('POST', `/api/v1/sandboxes/${s.id}/intents`, {
      capability: 'http_fetch',
      params: { service: 'openai', method: 'GET', path: '/' },
    });
    expect(r.json).toMatchObject({ outcome: 'ok', status: 200, body: 'bundle saw openai' });
  });

  it('serves gRPC, health and reflection from the bundled protos', async () => {
    const c = grpcClient(child.grpcAddress);
    expect(await c.call('Health', {})).toEqual({ status: 'ok', ready: true });
    const health = await new Promise<any>((resolve, reject) => c.health.Check({ service: '' }, (e: Error | null, r: any) => (e ? reject(e) : resolve(r))));
    expect(health).toEqual({ status: 'SERVING' });

    const reflectionProto = path.join(
      path.dirname(createRequire(import.meta.url).resolve('@grpc/reflection/package.json')),
      'build/proto/grpc/reflection/v1/reflection.proto',
    );
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(reflectionProto, { keepCase: true, defaults: true, oneofs: true })) as any;
    const rc = new pkg.grpc.reflection.v1.ServerReflection(child.grpcAddress, grpc.credentials.createInsecure());
    const names = await new Promise<string[]>((resolve, reject) => {
      const call = rc.ServerReflectionInfo();
      call.on('data', (m: any) => {
        resolve(m.list_services_response.service.map((s: any) => s.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
    rc.close();
    expect(names).toEqual(expect.arrayContaining(['agentd.v1.Agentd', 'grpc.health.v1.Health']));
  });

  it('`healthcheck` exits 0 against a live daemon and 1 against none', () => {
    const port = new URL(child.httpUrl).port;
    const ok = spawnSync(process.execPath, [bundle.outfile, 'healthcheck'], {
      env: { PATH: process.env.PATH ?? '', AGENTD_HTTP_LISTEN: `0.0.0.0:${port}` },
      timeout: 10_000,
    });
    expect(ok.status).toBe(0);
    const bad = spawnSync(process.execPath, [bundle.outfile, 'healthcheck'], {
      env: { PATH: process.env.PATH ?? '', AGENTD_HTTP_LISTEN: '127.0.0.1:9' },
      timeout: 10_000,
    });
    expect(bad.status).toBe(1);
  });
});
