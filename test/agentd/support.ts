// Test support for the agentd suites: temp dirs, key files, a stand-in egress proxy, the daemon
// in-process or as a child process (real ports, bound as port 0), and HTTP/gRPC clients.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { startAgentd, type Agentd } from '../../agentd/src/app.ts';
import { loadConfig } from '../../agentd/src/config.ts';
import { GATEWAY_TOKEN_HEADER, IDENTITY_HEADERS, PROTO_FILES, PROTO_ROOT } from '../../agentd/src/contract.ts';
import { generateJwks, type Jwks } from '../../agentd/src/core/tokens.ts';
import { LOADER_OPTIONS } from '../../agentd/src/grpc/protos.ts';
import { createLogger } from '../../agentd/src/log.ts';

export const AGENTD_DIR = fileURLToPath(new URL('../../agentd/', import.meta.url));
export const MAIN_TS = path.join(AGENTD_DIR, 'src', 'main.ts');

const cleanups: (() => void | Promise<void>)[] = [];
/** Runs everything registered by the helpers (call from afterAll). */
export async function cleanupAll(): Promise<void> {
  while (cleanups.length > 0) {
    const fn = cleanups.pop() as () => void | Promise<void>;
    await Promise.resolve(fn()).catch(() => undefined);
  }
}

export function tempDir(prefix = 'agentd-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes a secret file (gateway or registry token) and returns its path. */
export function writeSecret(dir: string, name: string, secret: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, `${secret}\n`);
  return file;
}

/** Identity headers as the gateway forwards them (gRPC: the same names as metadata). */
export function identity(id: { clientId: string; role?: string; scope?: 'all' | 'own'; tiers?: string[]; gatewayToken?: string }): Record<string, string> {
  return {
    [IDENTITY_HEADERS.clientId]: id.clientId,
    [IDENTITY_HEADERS.clientRole]: id.role ?? 'operator',
    [IDENTITY_HEADERS.clientScope]: id.scope ?? 'own',
    [IDENTITY_HEADERS.sandboxTiers]: (id.tiers ?? ['default', 'restricted', 'standard', 'premium', 'admin']).join(','),
    ...(id.gatewayToken !== undefined ? { [GATEWAY_TOKEN_HEADER]: id.gatewayToken } : {}),
  };
}

function writeJwks(dir: string, jwks: Jwks = generateJwks('test-key-1')): { file: string; jwks: Jwks } {
  const file = path.join(dir, 'jwks.json');
  writeFileSync(file, JSON.stringify(jwks));
  return { file, jwks };
}

// ---- stand-in egress proxy ------------------------------------------------------------------

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

export type EgressHandler = (req: ReceivedRequest, res: http.ServerResponse) => unknown;

export interface StandInEgress {
  url: string;
  port: number;
  requests: ReceivedRequest[];
  handler: EgressHandler;
  /** Resolves when the next request arrives (its body read). */
  nextRequest(): Promise<ReceivedRequest>;
  close(): Promise<void>;
}

export async function startEgress(handler?: EgressHandler): Promise<StandInEgress> {
  const waiters: ((r: ReceivedRequest) => void)[] = [];
  const egress: StandInEgress = {
    url: '',
    port: 0,
    requests: [],
    handler:
      handler ??
      ((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      }),
    nextRequest: () => new Promise((resolve) => waiters.push(resolve)),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: ReceivedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      egress.requests.push(r);
      for (const w of waiters.splice(0)) w(r);
      Promise.resolve(egress.handler(r, res)).catch(() => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  egress.port = (server.address() as AddressInfo).port;
  egress.url = `http://127.0.0.1:${egress.port}`;
  cleanups.push(() => egress.close());
  return egress;
}

/** A port where nothing listens (bound then released). */
export async function deadPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

// ---- the daemon -----------------------------------------------------------------------------

export interface TestEnv {
  dataDir: string;
  keyFile: string;
  jwks: Jwks;
  env: Record<string, string>;
}

/** An environment for a daemon on free ports with its own data dir and key file. */
export function testEnv(overrides: Record<string, string> = {}): TestEnv {
  const dir = tempDir();
  const { file, jwks } = writeJwks(dir);
  const dataDir = path.join(dir, 'data');
  const env: Record<string, string> = {
    AGENTD_HTTP_LISTEN: '127.0.0.1:0',
    AGENTD_GRPC_LISTEN: '127.0.0.1:0',
    AGENTD_METRICS_LISTEN: '127.0.0.1:0',
    AGENTD_DATA_DIR: dataDir,
    AGENTD_TOKEN_KEY_FILE: file,
    AGENTD_EGRESS_URL: 'http://127.0.0.1:9',
    AGENTD_LOG_LEVEL: 'info',
    ...overrides,
  };
  return { dataDir, keyFile: file, jwks, env };
}

export interface InProcess {
  agentd: Agentd;
  env: TestEnv;
  logs: string[];
  api: ApiClient;
}

export async function startInProcess(overrides: Record<string, string> = {}, existing?: TestEnv): Promise<InProcess> {
  const env = existing ?? testEnv(overrides);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  const config = loadConfig({ ...env.env, ...overrides });
  const agentd = await startAgentd(config, { logger: createLogger(config.logLevel, sink) });
  cleanups.push(() => agentd.close('test cleanup'));
  return { agentd, env, logs, api: apiClient(agentd.http.url) };
}

/** The Prometheus text of a daemon's metrics listener. */
export async function metricsText(agentd: Agentd): Promise<string> {
  const res = await fetch(agentd.metrics.url);
  if (res.status !== 200) throw new Error(`GET ${agentd.metrics.url} answered ${res.status}`);
  return res.text();
}

export interface Child {
  proc: ChildProcess;
  httpUrl: string;
  grpcAddress: string;
  /** host:port of the metrics listener. */
  metricsAddress: string;
  logs: string[];
  api: ApiClient;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node <entry>` with env and waits for its "agentd listening" log line. */
export async function startChild(env: Record<string, string>, entry: string = MAIN_TS, timeoutMs = 15_000): Promise<Child> {
  const proc = spawn(process.execPath, [entry], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  let stderr = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  cleanups.push(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    return exited.then(() => undefined);
  });
  const listening = new Promise<{ http: string; grpc: string; metrics: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agentd did not start within ${timeoutMs} ms\n${logs.join('\n')}\n${stderr}`)), timeoutMs);
    let buf = '';
    proc.stdout?.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        try {
          const j = JSON.parse(line) as { msg?: string; http?: string; grpc?: string; metrics?: string };
          if (j.msg === 'agentd listening') {
            clearTimeout(timer);
            resolve({ http: j.http as string, grpc: j.grpc as string, metrics: j.metrics as string });
          }
        } catch {
          // not JSON
        }
      }
    });
    proc.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`agentd exited (${code}) before listening\n${logs.join('\n')}\n${stderr}`));
    });
  });
  const addr = await listening;
  const httpUrl = `http://${addr.http}`;
  return { proc, httpUrl, grpcAddress: addr.grpc, metricsAddress: addr.metrics, logs, api: apiClient(httpUrl), exited };
}

// ---- clients --------------------------------------------------------------------------------

export interface ApiResponse<T = any> {
  status: number;
  headers: Headers;
  json: T;
  text: string;
}

export type ApiClient = <T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<ApiResponse<T>>;

/** A client of the HTTP API; defaultHeaders go with every request (e.g. identity). */
export function apiClient(base: string, defaultHeaders: Record<string, string> = {}): ApiClient {
  return async (method, p, body, headers = {}) => {
    const init: RequestInit = { method, headers: { ...defaultHeaders, ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const res = await fetch(`${base}${p}`, init);
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, json, text };
  };
}

export interface GrpcClient {
  call<T = any>(method: string, request: object, metadata?: Record<string, string>): Promise<T>;
  health: grpc.Client & Record<string, any>;
  raw: grpc.Client & Record<string, any>;
  close(): void;
}

function grpcPackage(): Record<string, any> {
  const def = protoLoader.loadSync([PROTO_FILES.agentd, PROTO_FILES.health], { ...LOADER_OPTIONS, includeDirs: [path.join(AGENTD_DIR, PROTO_ROOT)] });
  return grpc.loadPackageDefinition(def) as Record<string, any>;
}

export function grpcClient(address: string): GrpcClient {
  const pkg = grpcPackage();
  const raw = new pkg.agentd.v1.Agentd(address, grpc.credentials.createInsecure());
  const health = new pkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  const client: GrpcClient = {
    raw,
    health,
    call: (method, request, metadata = {}) =>
      new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(metadata)) md.set(k, v);
        raw[method](request, md, { deadline: Date.now() + 20_000 }, (err: grpc.ServiceError | null, res: any) => (err ? reject(err) : resolve(res)));
      }),
    close: () => {
      raw.close();
      health.close();
    },
  };
  cleanups.push(() => client.close());
  return client;
}

/** The rejection of a promise (fails if it resolves). */
export async function rejection<E = grpc.ServiceError>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (err) {
    return err as E;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
