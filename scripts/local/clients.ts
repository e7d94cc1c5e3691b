// Clients the integration tests use: raw HTTP/1.1 (any Host, any header), HTTP/2, gRPC to
// agentd through the gateway, and sandbox tokens minted as agentd does (or forged).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:http2';
import { connect as connectTcp } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SignJWT } from 'jose';
import { PROTO_PATHS, SANDBOX_TOKEN_HEADER, TOKEN_AUDIENCE, TOKEN_ISSUER } from '../../agentd/src/contract.ts';
import { REPO_ROOT } from './tools.ts';

export interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
  json<T = any>(): T;
}

/** One HTTP/1.1 request with exactly the given headers (Host included). */
export function rawRequest(
  port: number,
  opts: { method?: string; path: string; headers?: Record<string, string | string[]>; body?: string | Buffer; timeoutMs?: number; host?: string },
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: opts.host ?? '127.0.0.1',
        port,
        method: opts.method ?? 'GET',
        path: opts.path,
        headers: opts.headers,
        timeout: opts.timeoutMs ?? 10_000,
        setHost: !opts.headers || !Object.keys(opts.headers).some((h) => h.toLowerCase() === 'host'),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (opts.body) req.write(opts.body);
    req.end();
  });
}

/** One HTTP/2 (prior knowledge, h2c) request. */
export function h2Request(port: number, opts: { method?: string; path: string; headers?: Record<string, string> }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const session = connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const stream = session.request({ ':method': opts.method ?? 'GET', ':path': opts.path, ...opts.headers });
    let status = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      status = Number(h[':status']);
      headers = h as never;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      session.close();
      const body = Buffer.concat(chunks).toString('utf8');
      resolve({ status, headers, body, json: () => JSON.parse(body) });
    });
    stream.on('error', reject);
    stream.end();
  });
}

const agentdProto = protoLoader.loadSync(join(REPO_ROOT, 'agentd', PROTO_PATHS.agentd), { keepCase: true, longs: Number, defaults: true, oneofs: true });
const AgentdService = (grpc.loadPackageDefinition(agentdProto) as any).agentd.v1.Agentd as grpc.ServiceClientConstructor;

export type GrpcResult = { ok: true; value: any } | { ok: false; code: grpc.status; details: string };

/** agentd's gRPC API at `address` (the gateway's), with an API key as metadata; over TLS when given a CA. */
export class AgentdGrpc {
  private readonly client: any;
  constructor(address: string, tls?: { caFile: string; servername: string }) {
    const creds = tls ? grpc.credentials.createSsl(readFileSync(tls.caFile)) : grpc.credentials.createInsecure();
    this.client = new AgentdService(address, creds, tls ? { 'grpc.ssl_target_name_override': tls.servername, 'grpc.default_authority': tls.servername } : {});
  }
  call(method: string, request: object, apiKey?: string, extra: Record<string, string> = {}): Promise<GrpcResult> {
    const md = new grpc.Metadata();
    if (apiKey !== undefined) md.set('x-api-key', apiKey);
    for (const [k, v] of Object.entries(extra)) md.set(k, v);
    return new Promise((resolve) => {
      this.client[method](request, md, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, value: unknown) => {
        resolve(err ? { ok: false, code: err.code, details: err.details } : { ok: true, value });
      });
    });
  }
  close(): void {
    this.client.close();
  }
}

/** A sandbox token as agentd mints it, with any key, claims and expiry the test wants. */
export async function mintToken(
  keyB64url: string,
  claims: { sub: string; tier: string; expInSeconds?: number | null; kid?: string; iss?: string; aud?: string },
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ tier: claims.tier })
    .setProtectedHeader({ alg: 'HS256', kid: claims.kid ?? 'k1', typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuer(claims.iss ?? TOKEN_ISSUER)
    .setAudience(claims.aud ?? TOKEN_AUDIENCE)
    .setIssuedAt(now - 5);
  // expInSeconds: null mints a token without `exp` (which must be refused).
  if (claims.expInSeconds !== null) jwt.setExpirationTime(now + (claims.expInSeconds ?? 600));
  return jwt.sign(Buffer.from(keyB64url, 'base64url'));
}

/** A request to the egress proxy as agentd sends it: the service as Host, the token header. */
export function egressCall(
  port: number,
  service: string,
  token: string | undefined,
  opts: { method?: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<RawResponse> {
  return rawRequest(port, {
    method: opts.method ?? 'GET',
    path: opts.path,
    headers: { host: service, ...(token ? { [SANDBOX_TOKEN_HEADER]: token } : {}), ...opts.headers },
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
}

/** Every secret value of the stack must be absent from `text`. */
export function secretsFoundIn(text: string, secrets: Record<string, string>): string[] {
  return Object.entries(secrets)
    .filter(([, v]) => v && text.includes(v))
    .map(([k]) => k);
}

// ---- raw TCP ----------------------------------------------------------------------------------

export interface RawExchange {
  /** Status of the first response, 0 if none arrived. */
  readonly status: number;
  /** Everything the server sent (latin1). */
  readonly text: string;
  /** The body of the first response (after the blank line). */
  readonly body: string;
  /** The server closed the connection (or reset it) before waitMs. */
  readonly closed: boolean;
  readonly elapsedMs: number;
}

/**
 * Sends bytes on a fresh TCP connection and collects what comes back until the server closes
 * or `waitMs` passes. `drip` sends the chunks one by one, `dripMs` apart (slow clients).
 */
export function rawExchange(port: number, data: string | Buffer | (string | Buffer)[], opts: { waitMs?: number; dripMs?: number } = {}): Promise<RawExchange> {
  const chunks = Array.isArray(data) ? data : [data];
  const started = Date.now();
  return new Promise((resolve) => {
    const s = connectTcp(port, '127.0.0.1');
    let out = '';
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    let drip: NodeJS.Timeout | undefined;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(drip);
      s.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(out);
      const sep = out.indexOf('\r\n\r\n');
      resolve({ status: m ? Number(m[1]) : 0, text: out, body: sep >= 0 ? out.slice(sep + 4) : '', closed, elapsedMs: Date.now() - started });
    };
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
    s.on('connect', () => {
      if (!opts.dripMs) {
        for (const c of chunks) s.write(c);
        return;
      }
      let i = 0;
      s.write(chunks[i++]!);
      drip = setInterval(() => {
        if (i < chunks.length && !s.destroyed) s.write(chunks[i++]!);
      }, opts.dripMs);
    });
    timer = setTimeout(() => finish(false), opts.waitMs ?? 3000);
  });
}

/**
 * Steady traffic: `send` every `everyMs` (each call on its own, not waiting for the last) until
 * stopped; what each call answered (true: the expected answer). For changes applied under load.
 */
export function steadyTraffic(send: () => Promise<boolean>, everyMs: number): { stop(): Promise<{ sent: number; failed: number }> } {
  const outcomes: boolean[] = [];
  const inFlight: Promise<void>[] = [];
  const timer = setInterval(() => {
    inFlight.push(
      send().then(
        (ok) => void outcomes.push(ok),
        () => void outcomes.push(false),
      ),
    );
  }, everyMs);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(inFlight);
      return { sent: outcomes.length, failed: outcomes.filter((ok) => !ok).length };
    },
  };
}

/** curl with ARGS (a URL among them): "<status> <HTTP version>" of its answer, e.g. "200 2". */
export function curlStatusAndVersion(args: readonly string[]): string {
  const out = execFileSync('curl', ['-sS', '--max-time', '10', ...args, '-w', '\n%{http_code} %{http_version}'], { encoding: 'utf8' });
  return out.trim().split('\n').pop()!;
}

/** An http_fetch through the gateway: a new sandbox of KEY (tier standard), then the intent; both answers. */
export async function httpFetchIntent(
  gateway: { port: number; host?: string },
  key: string,
  params: { service: string; method: string; path: string },
): Promise<{ sandbox: RawResponse; intent?: RawResponse }> {
  const post = (path: string, body: object) =>
    rawRequest(gateway.port, {
      ...(gateway.host ? { host: gateway.host } : {}),
      method: 'POST',
      path,
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const sandbox = await post('/api/v1/sandboxes', { tier: 'standard' });
  if (sandbox.status !== 201) return { sandbox };
  return { sandbox, intent: await post(`/api/v1/sandboxes/${sandbox.json().id}/intents`, { capability: 'http_fetch', params }) };
}
