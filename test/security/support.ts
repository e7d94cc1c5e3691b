// Shared pieces of the security suite (test/security/*.test.ts): a case book that counts cases
// by category and writes the run's summary, a raw TCP client for requests no HTTP library
// would send, stand-ins for agentd that record what the gateway forwards, policy data
// variants, and the secret scan over everything a stack wrote.
import { expect, it } from 'vitest';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { connect as h2connect, createServer as createH2Server, type ClientHttp2Session, type ClientHttp2Stream, type Http2Server } from 'node:http2';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parse, stringify } from 'yaml';
import { loadPolicySpec, type PolicySpec } from '../../policy/spec.ts';
import { fileBytes } from '../../components/render/platform.ts';
import type { Stack } from '../../scripts/local/stack.ts';
import { sleep } from '../../scripts/local/processes.ts';
import { REPO_ROOT } from '../../scripts/local/tools.ts';

// ---- cases by category ------------------------------------------------------------------------

export const CATEGORIES = ['gateway-input', 'egress-input', 'faults', 'load', 'secret-hygiene'] as const;
export type Category = (typeof CATEGORIES)[number];

interface CaseResult {
  readonly category: Category;
  readonly name: string;
  status: 'passed' | 'failed' | 'not-run';
  error?: string;
}

const SUMMARY_DIR = join(REPO_ROOT, 'build/security');
const SUMMARY_FILE = join(REPO_ROOT, 'build/security-summary.json');

/**
 * Registers cases as vitest tests named `[category] name` and records how each ended. A case
 * whose file failed before it ran (e.g. in beforeAll) counts as tried and not passed.
 */
export class CaseBook {
  private readonly results: CaseResult[] = [];
  private readonly file: string;
  constructor(file: string) {
    this.file = file;
  }

  case(category: Category, name: string, fn: () => Promise<void> | void, timeoutMs?: number): void {
    const r: CaseResult = { category, name, status: 'not-run' };
    this.results.push(r);
    it(
      `[${category}] ${name}`,
      async () => {
        try {
          await fn();
          r.status = 'passed';
        } catch (e) {
          r.status = 'failed';
          r.error = String((e as Error)?.message ?? e).slice(0, 500);
          throw e;
        }
      },
      timeoutMs,
    );
  }

  /** Writes this file's results and the merged summary of every file (build/security-summary.json). */
  flush(): void {
    mkdirSync(SUMMARY_DIR, { recursive: true });
    const own = { file: this.file, finished_at: new Date().toISOString(), cases: this.results };
    const tmp = join(SUMMARY_DIR, `.${this.file}.${process.pid}.tmp`);
    writeFileSync(tmp, JSON.stringify(own, null, 2) + '\n');
    renameSync(tmp, join(SUMMARY_DIR, `${this.file}.json`));
    withLock(join(SUMMARY_DIR, '.lock'), () => {
      const files = readdirSync(SUMMARY_DIR)
        .filter((f) => f.endsWith('.json'))
        .sort();
      const all = files.map((f) => JSON.parse(readFileSync(join(SUMMARY_DIR, f), 'utf8')) as typeof own);
      const byCategory = Object.fromEntries(CATEGORIES.map((c) => [c, { tried: 0, passed: 0, failed: 0 }]));
      const byFile: Record<string, { tried: number; passed: number; finished_at: string }> = {};
      for (const f of all) {
        byFile[f.file] = { tried: f.cases.length, passed: f.cases.filter((c) => c.status === 'passed').length, finished_at: f.finished_at };
        for (const c of f.cases) {
          const b = byCategory[c.category]!;
          b.tried++;
          if (c.status === 'passed') b.passed++;
          else b.failed++;
        }
      }
      const total = Object.values(byCategory).reduce((a, b) => ({ tried: a.tried + b.tried, passed: a.passed + b.passed, failed: a.failed + b.failed }), {
        tried: 0,
        passed: 0,
        failed: 0,
      });
      const failures = all.flatMap((f) => f.cases.filter((c) => c.status !== 'passed').map((c) => ({ file: f.file, ...c })));
      const summary = { generated_at: new Date().toISOString(), total, by_category: byCategory, by_file: byFile, failures };
      const t = `${SUMMARY_FILE}.${process.pid}.tmp`;
      writeFileSync(t, JSON.stringify(summary, null, 2) + '\n');
      renameSync(t, SUMMARY_FILE);
      const mine = this.results.reduce<Record<string, [number, number]>>((acc, c) => {
        const v = (acc[c.category] ??= [0, 0]);
        v[0]++;
        if (c.status === 'passed') v[1]++;
        return acc;
      }, {});
      const line = (k: string, tried: number, passed: number) => `  ${k.padEnd(16)} tried ${String(tried).padStart(4)}  passed ${String(passed).padStart(4)}`;
      console.log(
        [
          `security cases in ${this.file}:`,
          ...Object.entries(mine).map(([k, [t, p]]) => line(k, t, p)),
          `all files so far (${relative(REPO_ROOT, SUMMARY_FILE)}):`,
          ...Object.entries(byCategory).map(([k, v]) => line(k, v.tried, v.passed)),
          line('total', total.tried, total.passed),
        ].join('\n'),
      );
    });
  }
}

function withLock(lock: string, fn: () => void): void {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // A lock older than a minute was left by a killed run.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 60_000) rmSync(lock, { recursive: true, force: true });
      } catch {
        /* gone meanwhile */
      }
      if (Date.now() > deadline) break;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

// ---- raw TCP ----------------------------------------------------------------------------------

export { rawExchange, type RawExchange } from '../../scripts/local/clients.ts';

/** The JSON error code in a body (also inside one HTTP/1.1 chunk), or undefined. */
export function errorCode(body: string): string | undefined {
  const start = body.indexOf('{');
  const end = body.lastIndexOf('}');
  if (start < 0 || end < start) return undefined;
  try {
    return JSON.parse(body.slice(start, end + 1))?.error?.code;
  } catch {
    return undefined;
  }
}

export interface H2Result {
  /** :status, or 0 when the stream was refused or reset. */
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
  readonly error?: string;
}

/** One HTTP/2 (h2c) request with an optional body, on `session` or a fresh one. Never throws. */
export function h2Send(
  port: number,
  opts: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer; session?: ClientHttp2Session; timeoutMs?: number },
): Promise<H2Result> {
  return new Promise((resolve) => {
    const own = !opts.session;
    const session = opts.session ?? h2connect(`http://127.0.0.1:${port}`);
    let status = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    const chunks: Buffer[] = [];
    let done = false;
    const onSessionError = (e: Error) => finish(e.message);
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      session.off('error', onSessionError);
      if (own) session.close();
      resolve({ status, headers, body: Buffer.concat(chunks).toString('utf8'), ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => finish('timeout'), opts.timeoutMs ?? 10_000);
    session.on('error', onSessionError);
    let stream: ClientHttp2Stream;
    try {
      stream = session.request({ ':method': opts.method ?? 'GET', ':path': opts.path, ...opts.headers }, { endStream: opts.body === undefined });
    } catch (e) {
      finish((e as Error).message);
      return;
    }
    stream.on('response', (h) => {
      status = Number(h[':status']);
      headers = h as never;
    });
    stream.on('trailers', (t) => {
      headers = { ...headers, ...(t as Record<string, string | string[] | undefined>) };
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => finish());
    stream.on('close', () => finish(stream.rstCode ? `reset ${stream.rstCode}` : undefined));
    stream.on('error', (e) => finish(e.message));
    if (opts.body !== undefined) stream.end(opts.body);
  });
}

// ---- stand-ins for agentd: see exactly what the gateway forwards --------------------------------

export interface SeenRequest {
  readonly transport: 'http' | 'grpc';
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
}

/**
 * Replaces agentd (HTTP and gRPC) with recorders on its ports: every request the gateway
 * forwards is recorded and answered 200 with the headers it carried (HTTP) or gRPC OK.
 * `restore()` closes them and starts the real agentd again.
 */
export async function replaceAgentdWithRecorder(stack: Stack): Promise<{ seen: SeenRequest[]; restore: () => Promise<void> }> {
  await stack.processes.agentd.stop();
  const seen: SeenRequest[] = [];
  const http: HttpServer = createHttpServer((req, res) => {
    const rec: SeenRequest = { transport: 'http', method: req.method ?? '', path: req.url ?? '', headers: req.headers };
    seen.push(rec);
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ recorded: rec }));
    });
  });
  const grpc: Http2Server = createH2Server();
  grpc.on('stream', (stream, headers) => {
    seen.push({ transport: 'grpc', method: String(headers[':method']), path: String(headers[':path']), headers: headers as IncomingHttpHeaders });
    stream.on('data', () => undefined);
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true });
    });
    stream.on('error', () => undefined);
  });
  await Promise.all([
    new Promise<void>((r) => http.listen(stack.ports.agentdHttp, '127.0.0.1', r)),
    new Promise<void>((r) => grpc.listen(stack.ports.agentdGrpc, '127.0.0.1', r)),
  ]);
  return {
    seen,
    restore: async () => {
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
      await new Promise<void>((r) => grpc.close(() => r()));
      await stack.processes.agentd.start();
    },
  };
}

// ---- policy data variants ---------------------------------------------------------------------

type PolicyDocs = Record<'clients' | 'roles' | 'rateLimitTiers' | 'egressServices' | 'sandboxTiers', any>;
const FILES = {
  clients: 'clients.yaml',
  roles: 'roles.yaml',
  rateLimitTiers: 'rate-limit-tiers.yaml',
  egressServices: 'egress-services.yaml',
  sandboxTiers: 'sandbox-tiers.yaml',
} as const;

/** The shipped policy data, changed by `edit`, validated by the real loader (a temp copy). */
export function policyVariant(edit: (docs: PolicyDocs) => void): PolicySpec {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-sec-policy-'));
  cpSync(join(REPO_ROOT, 'policy/data'), dir, { recursive: true });
  const docs = Object.fromEntries(Object.entries(FILES).map(([k, f]) => [k, parse(readFileSync(join(dir, f), 'utf8'))])) as PolicyDocs;
  edit(docs);
  for (const [k, f] of Object.entries(FILES)) writeFileSync(join(dir, f), stringify(docs[k as keyof PolicyDocs]));
  return loadPolicySpec(dir);
}

// ---- secret hygiene ---------------------------------------------------------------------------

/** Every secret a stack holds, in each form it could leak in. */
export function secretsOf(stack: Stack, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const raw = Buffer.from(stack.signingKey, 'base64url');
  return {
    ...Object.fromEntries(Object.entries(stack.apiKeys).map(([id, k]) => [`api key of ${id}`, k])),
    ...Object.fromEntries(Object.entries(stack.credentials).map(([id, c]) => [`credential of ${id}`, c])),
    'signing key (base64url)': stack.signingKey,
    'signing key (base64)': raw.toString('base64').replace(/=+$/, ''),
    'signing key (hex)': raw.toString('hex'),
    // The per-deploy tokens agentd trusts its two callers by: never in a log or a plain file.
    'gateway token': stack.gatewayToken,
    'registry token': stack.registryToken,
    ...extra,
  };
}

/**
 * secretsOf(stack), checked: every client's API key, every configured credential, the signing key
 * in its three spellings and the two per-deploy tokens, none shorter than 16 characters.
 */
export function checkedSecretsOf(stack: Stack, spec: PolicySpec): Record<string, string> {
  const secrets = secretsOf(stack);
  const withCredential = Object.values(spec.egressServices)
    .filter((s) => s.credential)
    .map((s) => s.id);
  expect(withCredential.length).toBeGreaterThan(0);
  expect(Object.keys(secrets).sort()).toEqual(
    [
      ...spec.clients.map((c) => `api key of ${c.id}`),
      ...withCredential.map((id) => `credential of ${id}`),
      'signing key (base64url)',
      'signing key (base64)',
      'signing key (hex)',
      'gateway token',
      'registry token',
    ].sort(),
  );
  for (const [k, v] of Object.entries(secrets)) expect(v.length, k).toBeGreaterThanOrEqual(16);
  return secrets;
}

export interface ScanFinding {
  readonly where: string;
  readonly secret: string;
}

function scanText(where: string, text: string, secrets: Readonly<Record<string, string>>): ScanFinding[] {
  return Object.entries(secrets)
    .filter(([, v]) => v && text.includes(v))
    .map(([k]) => ({ where, secret: k }));
}

/** Text of a file for scanning; a gzip (the bundle) is scanned decompressed too. */
function fileText(bytes: Buffer): string {
  let text = bytes.toString('latin1');
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      text += '\n' + gunzipSync(bytes).toString('latin1');
    } catch {
      /* not a complete gzip */
    }
  }
  return text;
}

function walk(dir: string, skip: (p: string) => boolean): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (skip(p)) return [];
    return e.isDirectory() ? walk(p, skip) : e.isFile() ? [p] : [];
  });
}

/**
 * Scans what a stack produced for the plaintext of its secrets: every log, the rendered files
 * (Envoy configs, SDS, OPA config, the bundle, decompressed), and every file the stack wrote
 * except the secret files themselves (Stack.secretDirs, as a target writes them from Pulumi
 * secrets) and the test CA. agentd's database (and WAL) is included.
 */
export function scanStack(
  stack: Stack,
  secrets: Readonly<Record<string, string>>,
  /** Narrows a file's text before the scan (a case that covers some lines elsewhere). */
  only: (where: string, text: string) => string = (_, t) => t,
): { scanned: string[]; findings: ScanFinding[] } {
  const scanned: string[] = [];
  const findings: ScanFinding[] = [];
  for (const [workload, files] of Object.entries({
    gateway: stack.rendered.gateway,
    egress: stack.rendered.egress,
    opa: stack.rendered.opa,
    bundles: stack.rendered.bundles,
    'gateway-live': stack.rendered.live?.gateway ?? {},
    'egress-live': stack.rendered.live?.egress ?? {},
  })) {
    for (const [name, content] of Object.entries(files)) {
      const where = `rendered ${workload}/${name}`;
      scanned.push(where);
      findings.push(...scanText(where, fileText(fileBytes(content)), secrets));
    }
  }
  const skip = (p: string) => [...stack.secretDirs, join(stack.dir, 'ca')].includes(p);
  for (const f of walk(stack.dir, skip)) {
    const where = relative(stack.dir, f);
    scanned.push(where);
    findings.push(...scanText(where, only(where, fileText(readFileSync(f))), secrets));
  }
  return { scanned, findings };
}

export { sleep };
