// Bounded storage over real HTTP and gRPC: the intent record size limit (400 intent_too_large,
// nothing stored or sent), the per-sandbox cap on intent records, retention by age (periodic
// and at start, in batches, without blocking the event loop; incremental vacuum and WAL
// truncation), page byte limits on the list endpoints, and the schema migration that added
// sandbox owners.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_FILE, GRPC_ERROR_CODE_METADATA, GRPC_ERROR_FIELD_METADATA } from '../../agentd/src/contract.ts';
import {
  cleanupAll,
  grpcClient,
  identity,
  metricsText,
  rejection,
  sleep,
  startEgress,
  startInProcess,
  testEnv,
  type ApiResponse,
  type InProcess,
  type StandInEgress,
} from './support.ts';

afterAll(cleanupAll);

const DAY = 86_400_000;
let egress: StandInEgress;
beforeAll(async () => {
  egress = await startEgress();
});

const fetchIntent = (params: Record<string, unknown> = {}) => ({
  capability: 'http_fetch',
  params: { service: 'openai', method: 'GET', path: '/v1/models', ...params },
});

function purgedMetric(text: string, table: string): number {
  const m = new RegExp(`^agentd_storage_purged_rows_total\\{table="${table}"\\} (\\d+)$`, 'm').exec(text);
  if (!m) throw new Error(`no agentd_storage_purged_rows_total{table="${table}"} in the metrics`);
  return Number(m[1]);
}

describe('intent record size limit', () => {
  let d: InProcess;
  beforeAll(async () => {
    d = await startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_INTENT_RECORD_MAX_BYTES: '2048' });
  });

  it('over the limit: 400 intent_too_large naming the field; nothing stored, nothing sent', async () => {
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const sent = egress.requests.length;
    const big = [
      [fetchIntent({ headers: { 'user-agent': 'u'.repeat(1000), accept: 'a'.repeat(1000) } }), 'params.headers'],
      [fetchIntent({ path: `/v1/${'p'.repeat(2100)}` }), 'params.path'],
    ] as const;
    for (const [body, field] of big) {
      const r = await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, body);
      expect(r.status).toBe(400);
      expect(r.json.error).toMatchObject({ code: 'intent_too_large', field });
      expect(r.json.error.message).toMatch(new RegExp(`^${field.replace('.', '\\.')} makes the intent record \\d+ bytes; at most 2048 bytes are stored`));
    }
    expect(egress.requests.length).toBe(sent);
    expect((await d.api('GET', `/api/v1/sandboxes/${s.id}/intents`)).json.intents).toEqual([]);
    expect((await d.api('GET', '/api/v1/status')).json.intents.total).toBe(0);
  });

  it('the limit is on the serialized record: id, sandbox id, capability, service, method, path, headers JSON, plus 64 bytes', async () => {
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    // 28 (id) + 28 (sandbox id) + 10 (http_fetch) + 6 (openai) + 3 (GET) + 2 ({}) + 64 = 141 bytes besides the path.
    const fits = await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchIntent({ path: `/${'x'.repeat(2048 - 141 - 1)}` }));
    expect(fits.status).toBe(200);
    const over = await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchIntent({ path: `/${'x'.repeat(2048 - 141)}` }));
    expect(over.status).toBe(400);
    expect(over.json.error.message).toContain('2049 bytes');
    expect((await d.api('GET', `/api/v1/sandboxes/${s.id}/intents`)).json.intents).toHaveLength(1);
  });

  it('gRPC: INVALID_ARGUMENT with code intent_too_large and the field', async () => {
    const c = grpcClient(d.agentd.grpc.address);
    const s = (await c.call('CreateSandbox', { tier: 'default' })).sandbox;
    const err = await rejection(
      c.call('ExecuteIntent', {
        sandbox_id: s.id,
        capability: 'http_fetch',
        http_fetch: { service: 'openai', method: 'GET', path: '/', headers: { 'user-agent': 'u'.repeat(3000) } },
      }),
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.metadata.get(GRPC_ERROR_CODE_METADATA)[0]).toBe('intent_too_large');
    expect(err.metadata.get(GRPC_ERROR_FIELD_METADATA)[0]).toBe('http_fetch.headers');
  });
});

describe('per-sandbox cap on intent records', () => {
  it('keeps the newest N records of each sandbox (enforced on insert) and counts what it deleted', async () => {
    const d = await startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_RETENTION_INTENTS_PER_SANDBOX: '3' });
    const a = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const b = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await d.api('POST', `/api/v1/sandboxes/${a.id}/intents`, fetchIntent({ path: `/n/${i}` }));
      expect(r.status).toBe(200);
      ids.push(r.json.id);
    }
    expect((await d.api('POST', `/api/v1/sandboxes/${b.id}/intents`, fetchIntent())).status).toBe(200);
    const h = await d.api('GET', `/api/v1/sandboxes/${a.id}/intents`);
    expect(h.json.intents.map((i: any) => i.id)).toEqual(ids.slice(2));
    expect((await d.api('GET', `/api/v1/sandboxes/${b.id}/intents`)).json.intents).toHaveLength(1);
    expect((await d.api('GET', '/api/v1/status')).json.intents.total).toBe(4);
    expect(purgedMetric(await metricsText(d.agentd), 'intents')).toBe(2);
  });

  it('a lowered cap trims existing sandboxes at the next start', async () => {
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url });
    const first = await startInProcess({}, env);
    const s = (await first.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    for (let i = 0; i < 6; i++) expect((await first.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchIntent({ path: `/n/${i}` }))).status).toBe(200);
    await first.agentd.close('restart');
    const second = await startInProcess({ AGENTD_RETENTION_INTENTS_PER_SANDBOX: '2' }, env);
    await waitFor(async () => (await second.api('GET', '/api/v1/status')).json.intents.total === 2);
    const h = await second.api('GET', `/api/v1/sandboxes/${s.id}/intents`);
    expect(h.json.intents.map((i: any) => i.path)).toEqual(['/n/4', '/n/5']);
    expect(purgedMetric(await metricsText(second.agentd), 'intents')).toBe(4);
  });
});

async function waitFor(cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await sleep(20);
  }
}

describe('retention by age', () => {
  it('purges intents older than AGENTD_RETENTION_DAYS and sandboxes that ended longer ago, with their intents', async () => {
    const d = await startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_RETENTION_DAYS: '30' });
    const ended = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 3600 })).json;
    const expiring = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 3600 })).json;
    const lasting = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 86_400 })).json;
    for (const s of [ended, expiring, lasting]) {
      for (let i = 0; i < 2; i++) expect((await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchIntent())).status).toBe(200);
    }
    expect((await d.api('DELETE', `/api/v1/sandboxes/${ended.id}`)).status).toBe(200);
    const before = purgedMetric(await metricsText(d.agentd), 'sandboxes');

    // 29 days on: nothing is old enough.
    expect(await d.agentd.retention.runOnce(Date.now() + 29 * DAY)).toEqual({ intents: 0, sandboxes: 0 });
    expect((await d.api('GET', '/api/v1/status')).json.intents.total).toBe(6);

    // 30 days and 2 hours on: every intent is older than 30 days; `ended` (terminated now) and
    // `expiring` (expired in 1 h) ended more than 30 days before; `lasting` (expires in 24 h) did not.
    expect(await d.agentd.retention.runOnce(Date.now() + 30 * DAY + 2 * 3600_000)).toEqual({ intents: 6, sandboxes: 2 });
    const list = (await d.api('GET', '/api/v1/sandboxes?limit=1000')).json.sandboxes.map((s: any) => s.id);
    expect(list).toEqual([lasting.id]);
    expect((await d.api('GET', `/api/v1/sandboxes/${lasting.id}/intents`)).json.intents).toEqual([]);
    expect((await d.api('GET', `/api/v1/sandboxes/${ended.id}`)).status).toBe(404);
    const m = await metricsText(d.agentd);
    expect(purgedMetric(m, 'sandboxes') - before).toBe(2);
    expect(purgedMetric(m, 'intents')).toBe(6);
    const log = d.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'storage purged');
    expect(log).toMatchObject({ purged_intents: 6, purged_sandboxes: 2, retention_days: 30 });
  });

  it('AGENTD_RETENTION_DAYS=0 keeps everything', async () => {
    const d = await startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_RETENTION_DAYS: '0' });
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 60 })).json;
    expect((await d.api('POST', `/api/v1/sandboxes/${s.id}/intents`, fetchIntent())).status).toBe(200);
    expect(await d.agentd.retention.runOnce(Date.now() + 1000 * DAY)).toEqual({ intents: 0, sandboxes: 0 });
    expect((await d.api('GET', '/api/v1/status')).json).toMatchObject({ sandboxes: { total: 1 }, intents: { total: 1 } });
  });

  it('at start, in batches: thousands of old rows go without blocking the event loop; the file shrinks and the WAL is truncated', async () => {
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url });
    const first = await startInProcess({}, env);
    const keep = (await first.api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 86_400 })).json;
    expect((await first.api('POST', `/api/v1/sandboxes/${keep.id}/intents`, fetchIntent({ path: '/recent' }))).status).toBe(200);
    await first.agentd.close('seed');

    // Seed old rows directly: 8 sandboxes that ended 40 days ago with 500 intents each, and
    // 2000 old intents of the sandbox that stays.
    const file = path.join(env.dataDir, DATABASE_FILE);
    const seed = (tag: number): void => {
      const db = new DatabaseSync(file);
      db.exec('PRAGMA busy_timeout = 5000');
      const old = Date.now() - 40 * DAY;
      const pad = 'h'.repeat(300);
      const hex = (i: number) => i.toString(16).padStart(24, '0');
      db.exec('BEGIN IMMEDIATE');
      const insS = db.prepare(
        `INSERT INTO sandboxes (id, owner, tier, labels, created_at, expires_at, terminated_at) VALUES (?, 'seed', 'default', '{}', ?, ?, ?)`,
      );
      const insI =
        db.prepare(`INSERT INTO intents (id, sandbox_id, capability, service, method, path, request_headers, outcome, status, created_at, completed_at)
                               VALUES (?, ?, 'http_fetch', 'openai', 'GET', '/old', ?, 'ok', 200, ?, ?)`);
      let n = tag * 1_000_000;
      for (let s = 0; s < 8; s++) {
        const sid = `sbx_${hex(tag * 1000 + s)}`;
        insS.run(sid, old, old + 3600_000, s % 2 === 0 ? old + 60_000 : null);
        for (let i = 0; i < 500; i++) insI.run(`int_${hex(++n)}`, sid, JSON.stringify({ 'user-agent': pad }), old, old);
      }
      for (let i = 0; i < 2000; i++) insI.run(`int_${hex(++n)}`, keep.id, JSON.stringify({ 'user-agent': pad }), old, old);
      db.exec('COMMIT');
      db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
      db.close();
    };
    {
      const db = new DatabaseSync(file);
      expect((db.prepare('PRAGMA auto_vacuum').get() as any).auto_vacuum).toBe(2); // INCREMENTAL on a new database
      db.close();
    }
    seed(1);
    const sizeBefore = statSync(file).size;
    expect(sizeBefore).toBeGreaterThan(2_000_000);

    // At start.
    const second = await startInProcess({}, env);
    await waitFor(async () => second.logs.some((l) => l.includes('"msg":"storage purged"')));
    const log = second.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'storage purged');
    expect(log).toMatchObject({ purged_intents: 6000, purged_sandboxes: 8 });
    const st = (await second.api('GET', '/api/v1/status')).json;
    expect(st.sandboxes.total).toBe(1);
    expect(st.intents.total).toBe(1);
    expect((await second.api('GET', `/api/v1/sandboxes/${keep.id}/intents`)).json.intents.map((i: any) => i.path)).toEqual(['/recent']);
    const m = await metricsText(second.agentd);
    expect(purgedMetric(m, 'intents')).toBe(6000);
    expect(purgedMetric(m, 'sandboxes')).toBe(8);
    // incremental_vacuum returned the pages, the checkpoint truncated the WAL.
    const sizeAfter = statSync(file).size;
    expect(sizeAfter).toBeLessThan(sizeBefore / 4);
    expect(existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0).toBe(0);

    // While serving: the same again, with the event loop watched and requests answered meanwhile.
    seed(2);
    const lag = monitorEventLoopDelay({ resolution: 5 });
    lag.enable();
    const purge = second.agentd.retention.runOnce();
    const probes: number[] = [];
    let done = false;
    void purge.finally(() => (done = true));
    while (!done) {
      const t = performance.now();
      expect((await second.api('GET', '/health')).status).toBe(200);
      probes.push(performance.now() - t);
    }
    const result = await purge;
    lag.disable();
    expect(result).toEqual({ intents: 6000, sandboxes: 8 });
    expect(probes.length).toBeGreaterThanOrEqual(1);
    // Batches of 500 rows: no single stretch holds the event loop for long.
    const maxLagMs = lag.max / 1e6;
    expect(maxLagMs).toBeLessThan(250);
    console.log(
      `retention: 6000 intents + 8 sandboxes purged at start (file ${sizeBefore} -> ${sizeAfter} bytes); again while serving: max event loop delay ${maxLagMs.toFixed(1)} ms, ${probes.length} health probes answered during the purge (slowest ${Math.max(...probes).toFixed(1)} ms)`,
    );
  });
});

describe('page byte limit', () => {
  let d: InProcess;
  beforeAll(async () => {
    d = await startInProcess({ AGENTD_EGRESS_URL: egress.url, AGENTD_PAGE_MAX_BYTES: '4096' });
  });

  it('sandbox lists stop before AGENTD_PAGE_MAX_BYTES and carry on with next_cursor (HTTP and gRPC)', async () => {
    const created: string[] = [];
    for (let i = 0; i < 24; i++) {
      const r = await d.api('POST', '/api/v1/sandboxes', { tier: 'default', labels: { note: `${i}-${'n'.repeat(200)}` } });
      expect(r.status).toBe(201);
      created.push(r.json.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: ApiResponse = await d.api('GET', `/api/v1/sandboxes?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      expect(Buffer.byteLength(r.text)).toBeLessThanOrEqual(4096);
      expect(r.json.sandboxes.length).toBeGreaterThan(0);
      seen.push(...r.json.sandboxes.map((s: any) => s.id));
      cursor = r.json.next_cursor;
      pages += 1;
    } while (cursor !== null && pages < 100);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(seen).toEqual(created);

    const c = grpcClient(d.agentd.grpc.address);
    const gSeen: string[] = [];
    let gCursor = '';
    let gPages = 0;
    do {
      const r: any = await c.call('ListSandboxes', { limit: 1000, cursor: gCursor });
      expect(r.sandboxes.length).toBeGreaterThan(0);
      expect(Buffer.byteLength(JSON.stringify(r.sandboxes))).toBeLessThanOrEqual(4096);
      gSeen.push(...r.sandboxes.map((s: any) => s.id));
      gCursor = r.next_cursor ?? '';
      gPages += 1;
    } while (gCursor !== '' && gPages < 100);
    expect(gPages).toBe(pages);
    expect(gSeen).toEqual(created);
  });

  it('intent lists too; an item larger than a page still comes, one per page', async () => {
    const s = (await d.api('POST', '/api/v1/sandboxes', { tier: 'default' })).json;
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await d.api(
        'POST',
        `/api/v1/sandboxes/${s.id}/intents`,
        fetchIntent({ path: `/p/${i}`, headers: { 'user-agent': 'u'.repeat(i === 5 ? 5000 : 400) } }),
      );
      expect(r.status).toBe(200);
      ids.push(r.json.id);
    }
    const seen: string[] = [];
    const sizes: number[] = [];
    let cursor: string | null = null;
    do {
      const r: ApiResponse = await d.api('GET', `/api/v1/sandboxes/${s.id}/intents?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      sizes.push(r.json.intents.length);
      if (r.json.intents.length > 1) expect(Buffer.byteLength(r.text)).toBeLessThanOrEqual(4096);
      seen.push(...r.json.intents.map((i: any) => i.id));
      cursor = r.json.next_cursor;
    } while (cursor !== null && sizes.length < 100);
    expect(seen).toEqual(ids);
    expect(sizes.length).toBeGreaterThanOrEqual(3);
    expect(sizes).toContain(1);
  });
});

describe('schema migration 2 (sandbox owners)', () => {
  it('a schema-1 database is migrated: existing sandboxes get owner "" and only scope all sees them', async () => {
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url });
    const { mkdirSync } = await import('node:fs');
    mkdirSync(env.dataDir, { recursive: true });
    const db = new DatabaseSync(path.join(env.dataDir, DATABASE_FILE));
    db.exec(`
      CREATE TABLE sandboxes (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tier TEXT NOT NULL, labels TEXT NOT NULL,
        created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, terminated_at INTEGER) STRICT;
      CREATE INDEX sandboxes_state ON sandboxes (terminated_at, expires_at);
      CREATE TABLE intents (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, sandbox_id TEXT NOT NULL REFERENCES sandboxes (id),
        capability TEXT NOT NULL, service TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, request_headers TEXT NOT NULL,
        outcome TEXT NOT NULL, status INTEGER, truncated INTEGER NOT NULL DEFAULT 0, body_bytes INTEGER, duration_ms INTEGER, error TEXT,
        created_at INTEGER NOT NULL, completed_at INTEGER) STRICT;
      CREATE INDEX intents_sandbox ON intents (sandbox_id, seq);
      CREATE INDEX intents_outcome ON intents (outcome);
      PRAGMA user_version = 1;
    `);
    const now = Date.now();
    const id = 'sbx_0123456789abcdef01234567';
    db.prepare(`INSERT INTO sandboxes (id, tier, labels, created_at, expires_at) VALUES (?, 'standard', '{"v":"1"}', ?, ?)`).run(id, now, now + 3600_000);
    db.prepare(`INSERT INTO intents (id, sandbox_id, capability, service, method, path, request_headers, outcome, status, created_at, completed_at)
                VALUES ('int_0123456789abcdef01234567', ?, 'http_fetch', 'openai', 'GET', '/v1', '{}', 'ok', 200, ?, ?)`).run(id, now, now);
    db.close();

    const d = await startInProcess({}, env);
    const got = await d.api('GET', `/api/v1/sandboxes/${id}`);
    expect(got.status).toBe(200);
    expect(got.json).toMatchObject({ id, owner: '', tier: 'standard', labels: { v: '1' }, state: 'active' });
    expect((await d.api('GET', `/api/v1/sandboxes/${id}/intents`)).json.intents).toHaveLength(1);
    const someone = identity({ clientId: 'someone', scope: 'own' });
    expect((await d.api('GET', `/api/v1/sandboxes/${id}`, undefined, someone)).status).toBe(404);
    expect((await d.api('GET', '/api/v1/sandboxes', undefined, someone)).json.sandboxes).toEqual([]);
    await d.agentd.close('check');
    const after = new DatabaseSync(path.join(env.dataDir, DATABASE_FILE), { readOnly: true });
    expect((after.prepare('PRAGMA user_version').get() as any).user_version).toBe(2);
    after.close();
  });
});
