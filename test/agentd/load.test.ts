// A bounded load test: one client sends a few thousand intents (each with a 1 KiB forwarded
// header) to agentd, running as a child process, against a stand-in egress. The per-sandbox
// retention cap keeps the row count at its bound, the database file stops growing once the bound
// is reached, and agentd's resident memory grows by less than a stated bound. The numbers are
// printed on one line.
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DATABASE_FILE } from '../../agentd/src/contract.ts';
import { apiClient, cleanupAll, identity, startChild, startEgress, testEnv } from './support.ts';

afterAll(cleanupAll);

const INTENTS = 2400;
const SANDBOXES = 5;
const KEEP_PER_SANDBOX = 150;
const CONCURRENCY = 8;
/** Stated bounds. */
const ROW_BOUND = SANDBOXES * KEEP_PER_SANDBOX;
const DB_FILE_BOUND_BYTES = 3 * 1024 * 1024;
const WAL_FILE_BOUND_BYTES = 5 * 1024 * 1024;
/**
 * V8 grows its heap lazily under a high allocation rate (measured: heap used stays at 50-80 MiB
 * while the reserved heap grows), so RSS grows by tens of MiB before it levels off; a leak of
 * the records themselves would add about 1.5 KiB per intent on top.
 */
const RSS_GROWTH_BOUND_BYTES = 96 * 1024 * 1024;
const HEAP_USED_BOUND_BYTES = 128 * 1024 * 1024;

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

const fileSize = (f: string): number => (existsSync(f) ? statSync(f).size : 0);

describe('bounded under load', () => {
  it(`${INTENTS} intents by one client: rows, file size and memory stay bounded`, async () => {
    const egress = await startEgress((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
    const env = testEnv({ AGENTD_EGRESS_URL: egress.url, AGENTD_RETENTION_INTENTS_PER_SANDBOX: String(KEEP_PER_SANDBOX) });
    const child = await startChild(env.env);
    const pid = child.proc.pid as number;
    const db = path.join(env.dataDir, DATABASE_FILE);
    const api = apiClient(child.httpUrl, identity({ clientId: 'load-client', scope: 'own', tiers: ['default'] }));

    const sandboxes: string[] = [];
    for (let i = 0; i < SANDBOXES; i++) {
      const r = await api('POST', '/api/v1/sandboxes', { tier: 'default', ttl_seconds: 3600 });
      expect(r.status).toBe(201);
      sandboxes.push(r.json.id);
    }
    expect(sandboxes).toHaveLength(SANDBOXES);

    const header = 'x'.repeat(1024);
    let next = 0;
    let failures = 0;
    let rssWarm = 0;
    let dbHalf = 0;
    const started = performance.now();
    const worker = async (): Promise<void> => {
      for (;;) {
        const n = next++;
        if (n >= INTENTS) return;
        const sid = sandboxes[n % SANDBOXES] as string;
        const r = await api('POST', `/api/v1/sandboxes/${sid}/intents`, {
          capability: 'http_fetch',
          params: { service: 'openai', method: 'GET', path: `/v1/load/${n}`, headers: { 'user-agent': header } },
        });
        if (r.status !== 200) failures += 1;
        if (n === 240) rssWarm = rssBytes(pid);
        if (n === INTENTS / 2) dbHalf = fileSize(db);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const seconds = (performance.now() - started) / 1000;
    const rssEnd = rssBytes(pid);
    const dbEnd = fileSize(db);
    const walEnd = fileSize(`${db}-wal`);

    const status = (await api('GET', '/api/v1/status')).json;
    const metrics = await (await fetch(`http://${child.metricsAddress}/metrics`)).text();
    const purged = Number(/^agentd_storage_purged_rows_total\{table="intents"\} (\d+)$/m.exec(metrics)?.[1]);
    const heapUsed = Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(metrics)?.[1]);
    let listed = 0;
    for (const sid of sandboxes) {
      const h = await api('GET', `/api/v1/sandboxes/${sid}/intents?limit=1000`);
      expect(h.json.next_cursor).toBeNull();
      listed += h.json.intents.length;
      // The newest records are the ones kept.
      expect(h.json.intents.at(-1).path).toMatch(/^\/v1\/load\/\d+$/);
    }

    console.log(
      `load: ${INTENTS} intents (1 KiB header each) over ${SANDBOXES} sandboxes in ${seconds.toFixed(1)} s (${Math.round(INTENTS / seconds)}/s, concurrency ${CONCURRENCY}); ` +
        `rows ${status.intents.total} (bound ${ROW_BOUND}), purged ${purged}; db ${dbHalf} B at half, ${dbEnd} B at end (bound ${DB_FILE_BOUND_BYTES}), wal ${walEnd} B; ` +
        `agentd RSS ${(rssWarm / 2 ** 20).toFixed(1)} MiB after warm-up -> ${(rssEnd / 2 ** 20).toFixed(1)} MiB (growth ${((rssEnd - rssWarm) / 2 ** 20).toFixed(1)} MiB, bound ${RSS_GROWTH_BOUND_BYTES / 2 ** 20} MiB), heap used ${(heapUsed / 2 ** 20).toFixed(1)} MiB (bound ${HEAP_USED_BOUND_BYTES / 2 ** 20} MiB)`,
    );

    expect(failures).toBe(0);
    expect(egress.requests.length).toBe(INTENTS);
    expect(status.intents.total).toBe(ROW_BOUND);
    expect(listed).toBe(ROW_BOUND);
    expect(purged).toBe(INTENTS - ROW_BOUND);
    expect(dbEnd).toBeLessThanOrEqual(DB_FILE_BOUND_BYTES);
    expect(walEnd).toBeLessThanOrEqual(WAL_FILE_BOUND_BYTES);
    // The bound was reached before half-time: the file no longer grows after it.
    expect(dbHalf).toBeGreaterThan(0);
    expect(dbEnd).toBeLessThanOrEqual(dbHalf * 1.1);
    expect(rssWarm).toBeGreaterThan(0);
    expect(rssEnd - rssWarm).toBeLessThan(RSS_GROWTH_BOUND_BYTES);
    expect(heapUsed).toBeGreaterThan(0);
    expect(heapUsed).toBeLessThan(HEAP_USED_BOUND_BYTES);
    // About 15-25 s on two busy cores; far more would mean something is off.
    expect(seconds).toBeLessThan(50);
    child.proc.kill('SIGTERM');
    expect((await child.exited).code).toBe(0);
  }, 90_000);
});
