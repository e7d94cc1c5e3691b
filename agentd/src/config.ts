// Configuration from the environment, validated once at start. Every problem names the variable
// and says how to fix it; all problems are reported together.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  AGENTD_GRPC_PORT,
  AGENTD_HTTP_PORT,
  AGENTD_METRICS_PORT,
  CONTAINER_DATA_DIR,
  DEFAULTS,
  DEFAULT_SANDBOX_TIERS,
  ENV,
  MODES,
  type AgentdMode,
} from './contract.ts';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface AgentdConfig {
  mode: AgentdMode;
  http: ListenAddress;
  grpc: ListenAddress;
  /** The metrics listener (GET /metrics only). */
  metrics: ListenAddress;
  /** Origin (and optional base path) of the egress proxy, without a trailing slash. */
  egressUrl: string;
  dataDir: string;
  tokenKeyFile: string | null;
  tokenKid: string | null;
  logLevel: LogLevel;
  sandboxTiers: string[];
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  fetchMaxBytes: number;
  fetchTimeoutMs: number;
  fetchMaxTimeoutMs: number;
  shutdownGraceMs: number;
  /** File with the per-deploy gateway secret (GATEWAY_TOKEN_HEADER); required in production. */
  gatewayTokenFile: string | null;
  /** File with the bearer token of the sandbox registry endpoint; required in production. */
  registryTokenFile: string | null;
  /** Days after which intents, and sandboxes that ended, are purged; 0 keeps them. */
  retentionDays: number;
  /** Intent records kept per sandbox (the newest); 0 = unlimited. */
  retentionIntentsPerSandbox: number;
  intentRecordMaxBytes: number;
  pageMaxBytes: number;
  maxActiveSandboxesPerClient: number;
}

/** Secrets (gateway token, registry token) are at least this long. */
const SECRET_MIN_LENGTH = 16;
/**
 * The sandbox registry: createSandbox/terminateSandbox wait at most this long for a poller (OPA)
 * to acknowledge a bundle revision that includes the change...
 */
export const REGISTRY_ACK_TIMEOUT_MS = 3000;
/** ...but only when a poller is expected (a registry token is configured) or was seen this recently (agentd without OPA never waits). */
export const REGISTRY_POLLER_SEEN_MS = 60_000;
/** Longest long poll agentd holds (a longer `Prefer: wait=N` is cut to this). */
export const REGISTRY_MAX_WAIT_SECONDS = 300;
/** Retention runs at start and then this often. */
export const PURGE_INTERVAL_MS = 60_000;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid agentd configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const DEV_DEFAULTS = {
  host: '127.0.0.1',
  egressUrl: DEFAULTS.devEgressUrl,
  dataDir: DEFAULTS.devDataDir,
};

type Env = Record<string, string | undefined>;

/** Reads and validates the configuration. Throws ConfigError listing every problem. */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): AgentdConfig {
  const problems: string[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };

  const modeRaw = get(ENV.mode) ?? 'development';
  let mode: AgentdMode = 'development';
  if ((MODES as readonly string[]).includes(modeRaw)) mode = modeRaw as AgentdMode;
  else problems.push(`${ENV.mode}='${modeRaw}' is not a mode; set it to one of: ${MODES.join(', ')}`);
  const prod = mode === 'production';
  const defaultHost = prod ? '0.0.0.0' : DEV_DEFAULTS.host;

  const http = parseListen(get(ENV.httpListen), ENV.httpListen, `${defaultHost}:${AGENTD_HTTP_PORT}`, problems);
  const grpc = parseListen(get(ENV.grpcListen), ENV.grpcListen, `${defaultHost}:${AGENTD_GRPC_PORT}`, problems);
  const metrics = parseListen(get(ENV.metricsListen), ENV.metricsListen, `${defaultHost}:${AGENTD_METRICS_PORT}`, problems);
  const listeners: [string, ListenAddress][] = [
    [ENV.httpListen, http],
    [ENV.grpcListen, grpc],
    [ENV.metricsListen, metrics],
  ];
  for (let i = 0; i < listeners.length; i++) {
    for (let j = i + 1; j < listeners.length; j++) {
      const [an, a] = listeners[i] as [string, ListenAddress];
      const [bn, b] = listeners[j] as [string, ListenAddress];
      if (a.port !== 0 && a.port === b.port && a.host === b.host) {
        problems.push(`${an} and ${bn} both use ${a.host}:${a.port}; give them different ports`);
      }
    }
  }

  let egressUrl = '';
  const egressRaw = get(ENV.egressUrl) ?? (prod ? undefined : DEV_DEFAULTS.egressUrl);
  if (egressRaw === undefined) {
    problems.push(`${ENV.egressUrl} is required in production mode; set it to the egress proxy URL, e.g. http://egress:8443`);
  } else {
    let u: URL | undefined;
    try {
      u = new URL(egressRaw);
    } catch {
      problems.push(`${ENV.egressUrl}='${egressRaw}' is not a URL; set it to the egress proxy URL, e.g. http://127.0.0.1:8443`);
    }
    if (u) {
      if (u.protocol !== 'http:' && u.protocol !== 'https:') {
        problems.push(`${ENV.egressUrl}='${egressRaw}' must use http: or https:, e.g. http://127.0.0.1:8443`);
      } else if (u.username || u.password || u.search || u.hash) {
        problems.push(
          `${ENV.egressUrl}='${egressRaw}' must not contain credentials, a query or a fragment; give only scheme, host, port (and optionally a base path)`,
        );
      } else {
        egressUrl = `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
      }
    }
  }

  const dataDirRaw = get(ENV.dataDir) ?? (prod ? CONTAINER_DATA_DIR : DEV_DEFAULTS.dataDir);
  const dataDir = path.resolve(cwd, dataDirRaw);

  const tokenKeyFileRaw = get(ENV.tokenKeyFile);
  const tokenKeyFile = tokenKeyFileRaw === undefined ? null : path.resolve(cwd, tokenKeyFileRaw);
  if (prod && tokenKeyFile === null) {
    problems.push(`${ENV.tokenKeyFile} is required in production mode; set it to a JWKS file with HS256 "oct" keys (the same file Envoy's jwt_authn uses)`);
  }
  const tokenKid = get(ENV.tokenKid) ?? null;
  if (tokenKid !== null && tokenKeyFile === null) {
    problems.push(`${ENV.tokenKid} is set but ${ENV.tokenKeyFile} is not; set ${ENV.tokenKeyFile} to the JWKS file that contains the key '${tokenKid}'`);
  }

  const secretFile = (name: string, what: string): string | null => {
    const raw = get(name);
    if (raw === undefined) {
      if (prod)
        problems.push(
          `${name} is required in production mode; set it to a file holding ${what} (at least ${SECRET_MIN_LENGTH} characters, e.g. from openssl rand -hex 32)`,
        );
      return null;
    }
    return path.resolve(cwd, raw);
  };
  const gatewayTokenFile = secretFile(ENV.gatewayTokenFile, 'the per-deploy secret the gateway sends in every API request');
  const registryTokenFile = secretFile(ENV.registryTokenFile, 'the bearer token OPA presents to fetch the sandbox registry');

  const logRaw = (get(ENV.logLevel) ?? 'info').toLowerCase();
  let logLevel: LogLevel = 'info';
  if ((LOG_LEVELS as readonly string[]).includes(logRaw)) logLevel = logRaw as LogLevel;
  else problems.push(`${ENV.logLevel}='${logRaw}' is not a log level; set it to one of: ${LOG_LEVELS.join(', ')}`);

  let sandboxTiers: string[] = [...DEFAULT_SANDBOX_TIERS];
  const tiersRaw = get(ENV.sandboxTiers);
  if (tiersRaw !== undefined) {
    const tiers = tiersRaw
      .split(',')
      .map((t) => t.trim())
      .filter((t) => t !== '');
    const bad = tiers.filter((t) => !/^[a-z][a-z0-9_-]{0,31}$/.test(t));
    if (tiers.length === 0) {
      problems.push(`${ENV.sandboxTiers} is empty; set it to a comma-separated list of tiers, e.g. ${DEFAULT_SANDBOX_TIERS.join(',')}`);
    } else if (bad.length > 0) {
      problems.push(
        `${ENV.sandboxTiers} has invalid tier name(s) ${bad.map((b) => `'${b}'`).join(', ')}; tiers are lowercase letters, digits, '_' or '-' (at most 32, starting with a letter)`,
      );
    } else {
      sandboxTiers = [...new Set(tiers)];
    }
  }

  const int = (name: string, def: number, min: number, max: number, unit: string): number => {
    const raw = get(name);
    if (raw === undefined) return def;
    if (!/^\d+$/.test(raw)) {
      problems.push(`${name}='${raw}' is not a whole number; set it to ${unit} between ${min} and ${max} (default ${def})`);
      return def;
    }
    const n = Number(raw);
    if (n < min || n > max) {
      problems.push(`${name}=${raw} is out of range; set it to ${unit} between ${min} and ${max} (default ${def})`);
      return def;
    }
    return n;
  };
  const DAY = 86_400;
  const maxTtlSeconds = int(ENV.maxTtlSeconds, DEFAULTS.maxTtlSeconds, 1, 365 * DAY, 'seconds');
  const defaultTtlSeconds = int(ENV.defaultTtlSeconds, Math.min(DEFAULTS.defaultTtlSeconds, maxTtlSeconds), 1, 365 * DAY, 'seconds');
  if (defaultTtlSeconds > maxTtlSeconds) {
    problems.push(`${ENV.defaultTtlSeconds}=${defaultTtlSeconds} exceeds ${ENV.maxTtlSeconds}=${maxTtlSeconds}; lower the default or raise the maximum`);
  }
  const fetchMaxBytes = int(ENV.fetchMaxBytes, DEFAULTS.fetchMaxBytes, 1, 64 * 1024 * 1024, 'bytes');
  const fetchMaxTimeoutMs = int(ENV.fetchMaxTimeoutMs, DEFAULTS.fetchMaxTimeoutMs, 1, 3_600_000, 'milliseconds');
  const fetchTimeoutMs = int(ENV.fetchTimeoutMs, Math.min(DEFAULTS.fetchTimeoutMs, fetchMaxTimeoutMs), 1, 3_600_000, 'milliseconds');
  if (fetchTimeoutMs > fetchMaxTimeoutMs) {
    problems.push(`${ENV.fetchTimeoutMs}=${fetchTimeoutMs} exceeds ${ENV.fetchMaxTimeoutMs}=${fetchMaxTimeoutMs}; lower the default or raise the maximum`);
  }
  const shutdownGraceMs = int(ENV.shutdownGraceMs, DEFAULTS.shutdownGraceMs, 0, 600_000, 'milliseconds');
  const retentionDays = int(ENV.retentionDays, DEFAULTS.retentionDays, 0, 3650, 'days (0 keeps everything)');
  const retentionIntentsPerSandbox = int(
    ENV.retentionIntentsPerSandbox,
    DEFAULTS.retentionIntentsPerSandbox,
    0,
    10_000_000,
    'a number of intent records (0 = unlimited)',
  );
  const intentRecordMaxBytes = int(ENV.intentRecordMaxBytes, DEFAULTS.intentRecordMaxBytes, 1024, 1024 * 1024, 'bytes');
  const pageMaxBytes = int(ENV.pageMaxBytes, DEFAULTS.pageMaxBytes, 1024, 64 * 1024 * 1024, 'bytes');
  const maxActiveSandboxesPerClient = int(ENV.maxActiveSandboxesPerClient, DEFAULTS.maxActiveSandboxesPerClient, 1, 1_000_000, 'a number of sandboxes');

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    mode,
    http,
    grpc,
    metrics,
    egressUrl,
    dataDir,
    tokenKeyFile,
    tokenKid,
    logLevel,
    sandboxTiers,
    defaultTtlSeconds,
    maxTtlSeconds,
    fetchMaxBytes,
    fetchTimeoutMs,
    fetchMaxTimeoutMs,
    shutdownGraceMs,
    gatewayTokenFile,
    registryTokenFile,
    retentionDays,
    retentionIntentsPerSandbox,
    intentRecordMaxBytes,
    pageMaxBytes,
    maxActiveSandboxesPerClient,
  };
}

/**
 * Reads a secret from a file named by an environment variable (at start; surrounding
 * whitespace, e.g. a trailing newline, is not part of it). Errors name the variable and the
 * file, never the content.
 */
export function readSecretFile(file: string, variable: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new Error(`${variable}='${file}' cannot be read (${code}); mount the secret file there or fix the path`);
  }
  const secret = text.trim();
  if (secret.length < SECRET_MIN_LENGTH) {
    throw new Error(
      `${variable}='${file}' holds ${secret.length === 0 ? 'nothing' : 'a too short secret'}; it must hold at least ${SECRET_MIN_LENGTH} characters (e.g. openssl rand -hex 32)`,
    );
  }
  if (/[\s\u0000-\u001f\u007f]/.test(secret)) {
    throw new Error(`${variable}='${file}' holds whitespace or control characters inside the secret; it must be one line of printable characters`);
  }
  return secret;
}

function parseListen(raw: string | undefined, name: string, def: string, problems: string[]): ListenAddress {
  const value = raw ?? def;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    problems.push(`${name}='${value}' is not host:port; set it like 0.0.0.0:${def.split(':').pop()} (use [::]:PORT for IPv6, port 0 for any free port)`);
    return { host: '127.0.0.1', port: 0 };
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/** host:port as a string, bracketing IPv6 literals. */
export function formatAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
