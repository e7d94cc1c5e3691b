// The only way out: every http_fetch goes to the configured egress proxy, never anywhere else.
// The request carries Host: <service> (the egress proxy routes on it and adds the upstream's
// credentials), the sandbox token, and only allowlisted caller headers. Redirects are not
// followed, bodies are capped, and every request has a deadline.
import { Agent, errors as undiciErrors } from 'undici';
import { REQUEST_ID_HEADER, SANDBOX_TOKEN_HEADER } from '../contract.ts';
import type { HttpFetchMethod } from '../contract.ts';

export interface EgressRequest {
  service: string;
  method: HttpFetchMethod;
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
  timeoutMs: number;
}

export type EgressOutcome = 'ok' | 'timeout' | 'egress_unavailable' | 'error' | 'interrupted';

export interface EgressResponse {
  outcome: EgressOutcome;
  status: number | null;
  headers: Record<string, string>;
  body: Buffer;
  truncated: boolean;
  error: string | null;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'proxy-authenticate']);

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

export class EgressClient {
  readonly url: URL;
  private readonly basePath: string;
  private readonly maxBytes: number;
  private readonly agent: Agent;

  constructor(opts: { egressUrl: string; maxBytes: number }) {
    this.url = new URL(opts.egressUrl);
    this.basePath = this.url.pathname.replace(/\/+$/, '');
    this.maxBytes = opts.maxBytes;
    this.agent = new Agent({
      keepAliveTimeout: 10_000,
      connect: { timeout: 5_000 },
      // Each request sets its own deadline; these only stop undici's defaults (300 s) from
      // being the effective limit.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  }

  /**
   * Sends one request. Never throws for network problems: the outcome says what happened.
   * `signal` aborts from outside (shutdown) and yields outcome "interrupted".
   */
  async fetch(req: EgressRequest, token: string, requestId: string, signal?: AbortSignal): Promise<EgressResponse> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`no complete response within ${req.timeoutMs} ms`));
    }, req.timeoutMs);
    const onOuterAbort = (): void => controller.abort(new Error('agentd is shutting down'));
    if (signal?.aborted) onOuterAbort();
    signal?.addEventListener('abort', onOuterAbort, { once: true });

    const headers: Record<string, string> = {
      ...req.headers,
      host: req.service,
      [SANDBOX_TOKEN_HEADER]: token,
      [REQUEST_ID_HEADER]: requestId,
      'accept-encoding': 'identity',
    };
    let status: number | null = null;
    let resHeaders: Record<string, string> = {};
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    try {
      const res = await this.agent.request({
        origin: this.url.origin,
        path: `${this.basePath}${req.path}`,
        method: req.method,
        headers,
        body: req.body,
        signal: controller.signal,
      });
      status = res.statusCode;
      resHeaders = flattenHeaders(res.headers);
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        const room = this.maxBytes - size;
        if (chunk.length > room) {
          if (room > 0) chunks.push(chunk.subarray(0, room));
          size += Math.max(room, 0);
          truncated = true;
          res.body.destroy();
          break;
        }
        chunks.push(chunk);
        size += chunk.length;
      }
      return { outcome: 'ok', status, headers: resHeaders, body: Buffer.concat(chunks), truncated, error: null };
    } catch (err) {
      const base = { status, headers: resHeaders, body: Buffer.concat(chunks), truncated };
      if (timedOut) return { ...base, outcome: 'timeout', error: `timed out after ${req.timeoutMs} ms` };
      if (signal?.aborted) return { ...base, outcome: 'interrupted', error: 'interrupted: agentd is shutting down' };
      const code = errorCode(err);
      if (code !== undefined && UNAVAILABLE_CODES.has(code)) {
        return { ...base, outcome: 'egress_unavailable', error: `egress proxy ${this.url.origin} unavailable (${code})` };
      }
      if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
        return { ...base, outcome: 'timeout', error: `timed out after ${req.timeoutMs} ms` };
      }
      return { ...base, outcome: 'error', error: `egress request failed: ${code ?? (err as Error).message}` };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onOuterAbort);
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => undefined);
  }

  destroy(): void {
    void this.agent.destroy().catch(() => undefined);
  }
}

function flattenHeaders(h: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k.toLowerCase())) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 4 && e; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_ABORTED') return code;
    e = (e as { cause?: unknown }).cause;
  }
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}
