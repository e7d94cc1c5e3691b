// Input validation for the domain core. Transports may validate the shape earlier (the HTTP
// JSON schemas are built from the same constants), but the core never trusts them: everything
// that reaches the service goes through these functions, and every error names the field.
import {
  CAPABILITIES,
  FORWARDED_REQUEST_HEADERS,
  HTTP_FETCH_METHODS,
  SANDBOX_STATES,
  SERVICE_ID_PATTERN,
  type Capability,
  type HttpFetchMethod,
  type SandboxState,
} from '../contract.ts';
import { invalidArgument } from './errors.ts';

export const LIMITS = {
  labelsMax: 32,
  labelKeyPattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$',
  labelValueMaxLength: 256,
  pathMaxLength: 8192,
  /** A path: starts with one "/", then printable ASCII without space, "#" or "\\". */
  pathPattern: '^/(?!/)[!-~]*$',
  requestBodyMaxBytes: 1024 * 1024,
  headersMax: 32,
  headerValueMaxLength: 8192,
  /** RFC 9110 token. */
  headerNamePattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
  listDefault: 100,
  listMax: 1000,
  cursorPattern: '^[0-9]{1,15}$',
} as const;

export const SANDBOX_ID_PATTERN = '^sbx_[0-9a-f]{24}$';
export const INTENT_ID_PATTERN = '^int_[0-9a-f]{24}$';

const FORWARDED = new Set<string>(FORWARDED_REQUEST_HEADERS);
const FORBIDDEN_EXACT = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'host',
  'forwarded',
  'via',
  'x-real-ip',
  'x-api-key',
  'api-key',
  'x-goog-api-key',
  'x-amz-security-token',
  'x-request-id',
]);
const FORBIDDEN_PREFIXES = ['x-agentd-', 'x-sandbox-', 'proxy-', 'x-forwarded-', 'x-envoy-'];

/** Why a caller header is refused, or null if it is not a forbidden header. */
function forbiddenHeaderReason(name: string): string | null {
  const n = name.toLowerCase();
  if (FORBIDDEN_EXACT.has(n) || FORBIDDEN_PREFIXES.some((p) => n.startsWith(p))) {
    return 'is not allowed: agentd never forwards credentials, identity or routing headers (the egress proxy adds credentials)';
  }
  return null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const CONTROL = /[\u0000-\u001f\u007f]/;

export interface CreateSandboxInput {
  tier: string;
  labels: Record<string, string>;
  ttlSeconds: number;
}

export function validateCreateSandbox(
  raw: unknown,
  limits: { tiers: readonly string[]; defaultTtlSeconds: number; maxTtlSeconds: number },
): CreateSandboxInput {
  if (!isObject(raw)) throw invalidArgument('body', 'must be a JSON object');
  checkUnknown(raw, ['tier', 'labels', 'ttl_seconds'], '');
  const tier = raw.tier;
  if (tier === undefined || tier === null || tier === '') throw invalidArgument('tier', `is required; one of: ${limits.tiers.join(', ')}`);
  if (typeof tier !== 'string' || !limits.tiers.includes(tier)) throw invalidArgument('tier', `must be one of: ${limits.tiers.join(', ')}`);
  const labels = validateLabels(raw.labels);
  let ttlSeconds = limits.defaultTtlSeconds;
  if (raw.ttl_seconds !== undefined && raw.ttl_seconds !== null) {
    const t = raw.ttl_seconds;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > limits.maxTtlSeconds) {
      throw invalidArgument('ttl_seconds', `must be a whole number of seconds from 1 to ${limits.maxTtlSeconds}`);
    }
    ttlSeconds = t;
  }
  return { tier, labels, ttlSeconds };
}

function validateLabels(raw: unknown): Record<string, string> {
  if (raw === undefined || raw === null) return {};
  if (!isObject(raw)) throw invalidArgument('labels', 'must be an object of string values');
  const entries = Object.entries(raw);
  if (entries.length > LIMITS.labelsMax) throw invalidArgument('labels', `must have at most ${LIMITS.labelsMax} entries`);
  const keyRe = new RegExp(LIMITS.labelKeyPattern);
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (!keyRe.test(k)) throw invalidArgument(`labels.${k}`, `is not a valid label key (pattern ${LIMITS.labelKeyPattern})`);
    if (typeof v !== 'string') throw invalidArgument(`labels.${k}`, 'must be a string');
    if (v.length > LIMITS.labelValueMaxLength || CONTROL.test(v)) {
      throw invalidArgument(`labels.${k}`, `must be at most ${LIMITS.labelValueMaxLength} characters without control characters`);
    }
    out[k] = v;
  }
  return out;
}

export function validateSandboxId(raw: unknown, field = 'id'): string {
  if (typeof raw !== 'string' || raw === '') throw invalidArgument(field, 'is required');
  if (!new RegExp(SANDBOX_ID_PATTERN).test(raw)) throw invalidArgument(field, `is not a sandbox id (expected sbx_ followed by 24 hex digits)`);
  return raw;
}

export interface PageInput {
  limit: number;
  after: number;
}

export function validatePage(raw: { limit?: unknown; cursor?: unknown }): PageInput {
  let limit: number = LIMITS.listDefault;
  if (raw.limit !== undefined && raw.limit !== null && raw.limit !== 0) {
    const l = raw.limit;
    if (typeof l !== 'number' || !Number.isInteger(l) || l < 1 || l > LIMITS.listMax) {
      throw invalidArgument('limit', `must be a whole number from 1 to ${LIMITS.listMax}`);
    }
    limit = l;
  }
  let after = 0;
  if (raw.cursor !== undefined && raw.cursor !== null && raw.cursor !== '') {
    if (typeof raw.cursor !== 'string' || !new RegExp(LIMITS.cursorPattern).test(raw.cursor)) {
      throw invalidArgument('cursor', 'is not a cursor returned by a previous list call (next_cursor)');
    }
    after = Number(raw.cursor);
  }
  return { limit, after };
}

export function validateListSandboxes(
  raw: { state?: unknown; tier?: unknown; limit?: unknown; cursor?: unknown },
  tiers: readonly string[],
): PageInput & { state: SandboxState | undefined; tier: string | undefined } {
  let state: SandboxState | undefined;
  if (raw.state !== undefined && raw.state !== null && raw.state !== '') {
    if (typeof raw.state !== 'string' || !(SANDBOX_STATES as readonly string[]).includes(raw.state)) {
      throw invalidArgument('state', `must be one of: ${SANDBOX_STATES.join(', ')}`);
    }
    state = raw.state as SandboxState;
  }
  let tier: string | undefined;
  if (raw.tier !== undefined && raw.tier !== null && raw.tier !== '') {
    if (typeof raw.tier !== 'string' || !tiers.includes(raw.tier)) throw invalidArgument('tier', `must be one of: ${tiers.join(', ')}`);
    tier = raw.tier;
  }
  return { state, tier, ...validatePage(raw) };
}

export interface HttpFetchParams {
  service: string;
  method: HttpFetchMethod;
  path: string;
  /** Lowercased, allowlisted headers to forward. */
  headers: Record<string, string>;
  /** Caller headers that are not on the allowlist and were not forwarded. */
  droppedHeaders: string[];
  body: string | undefined;
  timeoutMs: number;
}

export interface IntentInput {
  capability: Capability;
  params: HttpFetchParams;
}

/**
 * Validates an intent. paramsField is how the transport names the parameters object
 * ("params" in the HTTP body, "http_fetch" in the gRPC request), so errors name the field
 * the caller actually sent.
 */
export function validateIntent(raw: unknown, opts: { paramsField: string; defaultTimeoutMs: number; maxTimeoutMs: number }): IntentInput {
  if (!isObject(raw)) throw invalidArgument('body', 'must be a JSON object');
  const cap = raw.capability;
  if (cap === undefined || cap === null || cap === '') throw invalidArgument('capability', `is required; one of: ${CAPABILITIES.join(', ')}`);
  if (typeof cap !== 'string' || !(CAPABILITIES as readonly string[]).includes(cap)) {
    throw invalidArgument('capability', `must be one of: ${CAPABILITIES.join(', ')}`);
  }
  const pf = opts.paramsField;
  const p = raw.params;
  if (p === undefined || p === null) throw invalidArgument(pf, 'is required');
  if (!isObject(p)) throw invalidArgument(pf, 'must be an object');
  checkUnknown(p, ['service', 'method', 'path', 'headers', 'body', 'timeout_ms'], `${pf}.`);

  const service = p.service;
  if (typeof service !== 'string' || service === '') throw invalidArgument(`${pf}.service`, 'is required (the service id, e.g. "openai")');
  if (!new RegExp(SERVICE_ID_PATTERN).test(service)) {
    throw invalidArgument(`${pf}.service`, 'must be a service id: lowercase letters, digits, "." and "-" (at most 63)');
  }

  const method = p.method;
  if (typeof method !== 'string' || method === '') throw invalidArgument(`${pf}.method`, `is required; one of: ${HTTP_FETCH_METHODS.join(', ')}`);
  if (!(HTTP_FETCH_METHODS as readonly string[]).includes(method)) throw invalidArgument(`${pf}.method`, `must be one of: ${HTTP_FETCH_METHODS.join(', ')}`);

  const path = p.path;
  if (typeof path !== 'string' || path === '') throw invalidArgument(`${pf}.path`, 'is required (e.g. "/v1/models")');
  if (path.length > LIMITS.pathMaxLength) throw invalidArgument(`${pf}.path`, `must be at most ${LIMITS.pathMaxLength} characters`);
  if (!path.startsWith('/') || path.startsWith('//')) {
    throw invalidArgument(`${pf}.path`, 'must be an absolute path starting with a single "/" (not a URL); the egress proxy chooses the upstream');
  }
  if (!new RegExp(LIMITS.pathPattern).test(path) || path.includes('#') || path.includes('\\')) {
    throw invalidArgument(`${pf}.path`, 'must contain only printable ASCII without spaces, "#" or "\\" (percent-encode anything else)');
  }

  const headers: Record<string, string> = {};
  const droppedHeaders: string[] = [];
  if (p.headers !== undefined && p.headers !== null) {
    if (!isObject(p.headers)) throw invalidArgument(`${pf}.headers`, 'must be an object of header name to string value');
    const entries = Object.entries(p.headers);
    if (entries.length > LIMITS.headersMax) throw invalidArgument(`${pf}.headers`, `must have at most ${LIMITS.headersMax} entries`);
    const nameRe = new RegExp(LIMITS.headerNamePattern);
    for (const [name, value] of entries) {
      const field = `${pf}.headers.${name.replace(/[\r\n]/g, ' ')}`;
      if (/[\r\n]/.test(name)) throw invalidArgument(field, 'header name must not contain CR or LF');
      if (!nameRe.test(name)) throw invalidArgument(field, 'is not a valid header name');
      if (typeof value !== 'string') throw invalidArgument(field, 'header value must be a string');
      if (/[\r\n]/.test(value)) throw invalidArgument(field, 'header value must not contain CR or LF');
      if (CONTROL.test(value.replace(/\t/g, ''))) throw invalidArgument(field, 'header value must not contain control characters');
      if (value.length > LIMITS.headerValueMaxLength) throw invalidArgument(field, `header value must be at most ${LIMITS.headerValueMaxLength} characters`);
      const lower = name.toLowerCase();
      const forbidden = forbiddenHeaderReason(lower);
      if (forbidden) throw invalidArgument(field, forbidden);
      if (FORWARDED.has(lower)) {
        if (lower in headers) throw invalidArgument(field, 'is given twice (header names are case-insensitive)');
        headers[lower] = value;
      } else {
        droppedHeaders.push(lower);
      }
    }
  }

  let body: string | undefined;
  if (p.body !== undefined && p.body !== null) {
    if (typeof p.body !== 'string') throw invalidArgument(`${pf}.body`, 'must be a string');
    if (method === 'GET' || method === 'HEAD') {
      if (p.body !== '') throw invalidArgument(`${pf}.body`, `is not allowed with ${method}`);
    } else {
      if (Buffer.byteLength(p.body) > LIMITS.requestBodyMaxBytes) throw invalidArgument(`${pf}.body`, `must be at most ${LIMITS.requestBodyMaxBytes} bytes`);
      body = p.body;
    }
  }

  let timeoutMs = Math.min(opts.defaultTimeoutMs, opts.maxTimeoutMs);
  if (p.timeout_ms !== undefined && p.timeout_ms !== null) {
    const t = p.timeout_ms;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > opts.maxTimeoutMs) {
      throw invalidArgument(`${pf}.timeout_ms`, `must be a whole number of milliseconds from 1 to ${opts.maxTimeoutMs}`);
    }
    timeoutMs = t;
  }

  return { capability: cap as Capability, params: { service, method: method as HttpFetchMethod, path, headers, droppedHeaders, body, timeoutMs } };
}

function checkUnknown(obj: Record<string, unknown>, known: string[], prefix: string): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw invalidArgument(`${prefix}${k}`, `is not a known field (known: ${known.join(', ')})`);
  }
}
