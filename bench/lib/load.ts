// Runs one load (bench/lib/http-load.ts) in its own Node process and returns its result.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { LoadResult, LoadSpec, MaxLoadResult, MaxLoadSpec, RateLoadResult, RateLoadSpec } from './http-load.ts';

export type { HttpRequestSpec, LoadTarget, MaxLoadResult, RateLoadResult } from './http-load.ts';

const GENERATOR = fileURLToPath(new URL('./http-load.ts', import.meta.url));

function inProcess(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [GENERATOR], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.once('error', reject);
    child.once('close', (code) => {
      const text = Buffer.concat(out).toString('utf8').trim();
      try {
        const m = JSON.parse(text.split('\n').at(-1) ?? '') as { ok: true; result: LoadResult } | { ok: false; error: string };
        if (m.ok) resolve(m.result);
        else reject(new Error(`load generator failed: ${m.error}`));
      } catch {
        reject(new Error(`load generator exited with code ${code} without a result: ${Buffer.concat(err).toString('utf8').slice(-2000)}`));
      }
    });
    child.stdin.end(JSON.stringify(spec));
  });
}

/** Open-loop fixed-rate run; throws when the run saw errors or unexpected answers. */
export async function rateLoad(spec: Omit<RateLoadSpec, 'kind'>, label: string): Promise<RateLoadResult> {
  const r = (await inProcess({ kind: 'rate', ...spec })) as RateLoadResult;
  const bad = Object.values(r.unexpected).reduce((a, b) => a + b, 0) + Object.values(r.errors).reduce((a, b) => a + b, 0);
  if (bad > 0) {
    throw new Error(
      `${label}: ${bad} of ${r.sent} requests failed (unexpected: ${JSON.stringify(r.unexpected)}, errors: ${JSON.stringify(r.errors)})` +
        (r.example ? `; e.g. ${r.example}` : ''),
    );
  }
  return r;
}

/** Closed-loop maximum-throughput run (autocannon); throws when more than 0.1% failed. */
export async function maxLoad(spec: Omit<MaxLoadSpec, 'kind'>, label: string): Promise<MaxLoadResult> {
  const r = (await inProcess({ kind: 'max', ...spec })) as MaxLoadResult;
  const total = r.ok + r.non2xx + r.errors;
  if (r.ok === 0 || r.non2xx + r.errors + r.timeouts > total * 0.001) {
    throw new Error(`${label}: ${r.ok} expected answers, ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
  }
  return r;
}
