// Configuration: development defaults, production requirements, and errors that name the
// variable and the fix. Also the contract module's rule: no imports.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, readSecretFile } from '../../agentd/src/config.ts';
import * as contract from '../../agentd/src/contract.ts';
import { AGENTD_DIR, MAIN_TS, tempDir, writeSecret } from './support.ts';

const problems = (env: Record<string, string>): string[] => {
  try {
    loadConfig(env, '/work');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
};

describe('loadConfig', () => {
  it('development defaults when nothing is set', () => {
    const c = loadConfig({}, '/repo');
    expect(c).toMatchObject({
      mode: 'development',
      http: { host: '127.0.0.1', port: contract.AGENTD_HTTP_PORT },
      grpc: { host: '127.0.0.1', port: contract.AGENTD_GRPC_PORT },
      metrics: { host: '127.0.0.1', port: contract.AGENTD_METRICS_PORT },
      egressUrl: 'http://127.0.0.1:8443',
      dataDir: '/repo/build/agentd-dev',
      tokenKeyFile: null,
      tokenKid: null,
      logLevel: 'info',
      sandboxTiers: ['default', 'restricted', 'standard', 'premium', 'admin'],
      defaultTtlSeconds: 3600,
      maxTtlSeconds: 86_400,
      fetchMaxBytes: 1024 * 1024,
      fetchTimeoutMs: 30_000,
      fetchMaxTimeoutMs: 120_000,
      shutdownGraceMs: 15_000,
      gatewayTokenFile: null,
      registryTokenFile: null,
      retentionDays: 30,
      retentionIntentsPerSandbox: 1000,
      intentRecordMaxBytes: 16_384,
      pageMaxBytes: 1024 * 1024,
      maxActiveSandboxesPerClient: 100,
    });
  });

  it('production: 0.0.0.0, /data, and a key file, egress URL, gateway and registry token files are required', () => {
    expect(problems({ AGENTD_MODE: 'production' })).toEqual([
      expect.stringMatching(/^AGENTD_EGRESS_URL is required in production mode; set it to/),
      expect.stringMatching(/^AGENTD_TOKEN_KEY_FILE is required in production mode; set it to a JWKS file/),
      expect.stringMatching(/^AGENTD_GATEWAY_TOKEN_FILE is required in production mode; set it to a file holding the per-deploy secret/),
      expect.stringMatching(/^AGENTD_REGISTRY_TOKEN_FILE is required in production mode; set it to a file holding the bearer token/),
    ]);
    const c = loadConfig({
      AGENTD_MODE: 'production',
      AGENTD_EGRESS_URL: 'http://egress:8443/',
      AGENTD_TOKEN_KEY_FILE: '/keys/jwks.json',
      AGENTD_GATEWAY_TOKEN_FILE: '/secrets/gateway-token',
      AGENTD_REGISTRY_TOKEN_FILE: '/secrets/registry-token',
    });
    expect(c).toMatchObject({
      http: { host: '0.0.0.0', port: 8090 },
      grpc: { host: '0.0.0.0', port: 9500 },
      metrics: { host: '0.0.0.0', port: 9464 },
      dataDir: '/data',
      egressUrl: 'http://egress:8443',
      gatewayTokenFile: '/secrets/gateway-token',
      registryTokenFile: '/secrets/registry-token',
    });
  });

  it('reads every variable', () => {
    const c = loadConfig(
      {
        AGENTD_HTTP_LISTEN: '[::]:8000',
        AGENTD_GRPC_LISTEN: 'localhost:0',
        AGENTD_EGRESS_URL: 'https://egress.internal:9443/base/',
        AGENTD_DATA_DIR: 'rel/data',
        AGENTD_TOKEN_KEY_FILE: '/k.json',
        AGENTD_TOKEN_KID: 'k2',
        AGENTD_LOG_LEVEL: 'DEBUG',
        AGENTD_SANDBOX_TIERS: 'free, pro ,free',
        AGENTD_DEFAULT_TTL_SECONDS: '60',
        AGENTD_MAX_TTL_SECONDS: '600',
        AGENTD_FETCH_MAX_BYTES: '2048',
        AGENTD_FETCH_TIMEOUT_MS: '1000',
        AGENTD_FETCH_MAX_TIMEOUT_MS: '5000',
        AGENTD_SHUTDOWN_GRACE_MS: '0',
        AGENTD_METRICS_LISTEN: '127.0.0.2:9999',
        AGENTD_GATEWAY_TOKEN_FILE: 'secrets/gw',
        AGENTD_REGISTRY_TOKEN_FILE: '/secrets/reg',
        AGENTD_RETENTION_DAYS: '0',
        AGENTD_RETENTION_INTENTS_PER_SANDBOX: '50',
        AGENTD_INTENT_RECORD_MAX_BYTES: '4096',
        AGENTD_PAGE_MAX_BYTES: '65536',
        AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT: '7',
      },
      '/cwd',
    );
    expect(c).toMatchObject({
      http: { host: '::', port: 8000 },
      grpc: { host: 'localhost', port: 0 },
      egressUrl: 'https://egress.internal:9443/base',
      dataDir: '/cwd/rel/data',
      tokenKeyFile: '/k.json',
      tokenKid: 'k2',
      logLevel: 'debug',
      sandboxTiers: ['free', 'pro'],
      defaultTtlSeconds: 60,
      maxTtlSeconds: 600,
      fetchMaxBytes: 2048,
      fetchTimeoutMs: 1000,
      fetchMaxTimeoutMs: 5000,
      shutdownGraceMs: 0,
      metrics: { host: '127.0.0.2', port: 9999 },
      gatewayTokenFile: '/cwd/secrets/gw',
      registryTokenFile: '/secrets/reg',
      retentionDays: 0,
      retentionIntentsPerSandbox: 50,
      intentRecordMaxBytes: 4096,
      pageMaxBytes: 65_536,
      maxActiveSandboxesPerClient: 7,
    });
  });

  it.each([
    [{ AGENTD_HTTP_LISTEN: '8090' }, /^AGENTD_HTTP_LISTEN='8090' is not host:port; set it like 0\.0\.0\.0:8090/],
    [{ AGENTD_GRPC_LISTEN: 'host:99999' }, /^AGENTD_GRPC_LISTEN='host:99999' is not host:port/],
    [{ AGENTD_HTTP_LISTEN: '127.0.0.1:7000', AGENTD_GRPC_LISTEN: '127.0.0.1:7000' }, /both use 127\.0\.0\.1:7000/],
    [{ AGENTD_EGRESS_URL: 'egress:8443' }, /^AGENTD_EGRESS_URL='egress:8443' must use http: or https:/],
    [{ AGENTD_EGRESS_URL: 'not a url' }, /^AGENTD_EGRESS_URL='not a url' is not a URL/],
    [{ AGENTD_EGRESS_URL: 'http://u:p@egress:8443' }, /must not contain credentials/],
    [{ AGENTD_TOKEN_KID: 'k1' }, /^AGENTD_TOKEN_KID is set but AGENTD_TOKEN_KEY_FILE is not/],
    [{ AGENTD_LOG_LEVEL: 'loud' }, /^AGENTD_LOG_LEVEL='loud' is not a log level; set it to one of: fatal/],
    [{ AGENTD_MODE: 'staging' }, /^AGENTD_MODE='staging' is not a mode/],
    [{ AGENTD_SANDBOX_TIERS: ' , ' }, /^AGENTD_SANDBOX_TIERS is empty/],
    [{ AGENTD_SANDBOX_TIERS: 'ok,Not OK' }, /^AGENTD_SANDBOX_TIERS has invalid tier name\(s\) 'Not OK'/],
    [{ AGENTD_DEFAULT_TTL_SECONDS: 'ten' }, /^AGENTD_DEFAULT_TTL_SECONDS='ten' is not a whole number; set it to seconds between/],
    [{ AGENTD_MAX_TTL_SECONDS: '0' }, /^AGENTD_MAX_TTL_SECONDS=0 is out of range/],
    [{ AGENTD_DEFAULT_TTL_SECONDS: '7200', AGENTD_MAX_TTL_SECONDS: '3600' }, /^AGENTD_DEFAULT_TTL_SECONDS=7200 exceeds AGENTD_MAX_TTL_SECONDS=3600/],
    [{ AGENTD_FETCH_MAX_BYTES: '-1' }, /^AGENTD_FETCH_MAX_BYTES='-1' is not a whole number/],
    [{ AGENTD_FETCH_TIMEOUT_MS: '9000', AGENTD_FETCH_MAX_TIMEOUT_MS: '5000' }, /^AGENTD_FETCH_TIMEOUT_MS=9000 exceeds AGENTD_FETCH_MAX_TIMEOUT_MS=5000/],
    [{ AGENTD_SHUTDOWN_GRACE_MS: '1.5' }, /^AGENTD_SHUTDOWN_GRACE_MS='1.5' is not a whole number/],
    [{ AGENTD_METRICS_LISTEN: 'metrics' }, /^AGENTD_METRICS_LISTEN='metrics' is not host:port; set it like 0\.0\.0\.0:9464/],
    [
      { AGENTD_HTTP_LISTEN: '127.0.0.1:7000', AGENTD_METRICS_LISTEN: '127.0.0.1:7000' },
      /^AGENTD_HTTP_LISTEN and AGENTD_METRICS_LISTEN both use 127\.0\.0\.1:7000/,
    ],
    [{ AGENTD_GRPC_LISTEN: '127.0.0.1:9464' }, /^AGENTD_GRPC_LISTEN and AGENTD_METRICS_LISTEN both use 127\.0\.0\.1:9464/],
    [{ AGENTD_RETENTION_DAYS: '-1' }, /^AGENTD_RETENTION_DAYS='-1' is not a whole number; set it to days/],
    [{ AGENTD_RETENTION_DAYS: '4000' }, /^AGENTD_RETENTION_DAYS=4000 is out of range/],
    [{ AGENTD_RETENTION_INTENTS_PER_SANDBOX: 'all' }, /^AGENTD_RETENTION_INTENTS_PER_SANDBOX='all' is not a whole number/],
    [{ AGENTD_INTENT_RECORD_MAX_BYTES: '100' }, /^AGENTD_INTENT_RECORD_MAX_BYTES=100 is out of range; set it to bytes between 1024/],
    [{ AGENTD_PAGE_MAX_BYTES: '1e6' }, /^AGENTD_PAGE_MAX_BYTES='1e6' is not a whole number/],
    [{ AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT: '0' }, /^AGENTD_MAX_ACTIVE_SANDBOXES_PER_CLIENT=0 is out of range/],
  ])('%j', (env, message) => {
    expect(problems(env)).toEqual([expect.stringMatching(message)]);
  });

  it('reports every problem at once', () => {
    expect(problems({ AGENTD_HTTP_LISTEN: 'x', AGENTD_LOG_LEVEL: 'x', AGENTD_FETCH_MAX_BYTES: 'x' })).toHaveLength(3);
  });

  it('the daemon exits 2 with the problems on stderr', () => {
    const r = spawnSync(process.execPath, [MAIN_TS], {
      env: { PATH: process.env.PATH ?? '', AGENTD_HTTP_LISTEN: 'nope', AGENTD_MODE: 'production' },
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("AGENTD_HTTP_LISTEN='nope' is not host:port");
    expect(r.stderr).toContain('AGENTD_TOKEN_KEY_FILE is required in production mode');
  });

  it('the daemon fails to start, naming the variable, when the key file is bad', () => {
    const r = spawnSync(process.execPath, [MAIN_TS], {
      env: {
        PATH: process.env.PATH ?? '',
        AGENTD_TOKEN_KEY_FILE: '/nonexistent/jwks.json',
        AGENTD_DATA_DIR: '/tmp/agentd-never-created',
        AGENTD_HTTP_LISTEN: '127.0.0.1:0',
        AGENTD_GRPC_LISTEN: '127.0.0.1:0',
      },
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain("AGENTD_TOKEN_KEY_FILE='/nonexistent/jwks.json' cannot be read (ENOENT)");
  });

  it('secret files: read once, trimmed, at least 16 characters; errors name the variable, never the content', () => {
    const dir = tempDir();
    expect(readSecretFile(writeSecret(dir, 'ok', 'a'.repeat(16)), 'AGENTD_GATEWAY_TOKEN_FILE')).toBe('a'.repeat(16));
    expect(() => readSecretFile(writeSecret(dir, 'short', 'tooshort-15char'), 'AGENTD_GATEWAY_TOKEN_FILE')).toThrow(
      /^AGENTD_GATEWAY_TOKEN_FILE='.*short' holds a too short secret; it must hold at least 16 characters/,
    );
    expect(() => readSecretFile(writeSecret(dir, 'empty', ''), 'AGENTD_REGISTRY_TOKEN_FILE')).toThrow(/^AGENTD_REGISTRY_TOKEN_FILE='.*empty' holds nothing/);
    expect(() => readSecretFile(path.join(dir, 'missing'), 'AGENTD_REGISTRY_TOKEN_FILE')).toThrow(
      /^AGENTD_REGISTRY_TOKEN_FILE='.*missing' cannot be read \(ENOENT\)/,
    );
    let message = '';
    try {
      readSecretFile(writeSecret(dir, 'spaced', 'secret with spaces inside'), 'AGENTD_GATEWAY_TOKEN_FILE');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/whitespace or control characters/);
    expect(message).not.toContain('secret with spaces');
  });

  it('the daemon fails to start, naming the variable, when the gateway token file is too short', () => {
    const dir = tempDir();
    const r = spawnSync(process.execPath, [MAIN_TS], {
      env: {
        PATH: process.env.PATH ?? '',
        AGENTD_GATEWAY_TOKEN_FILE: writeSecret(dir, 'gw', 'short-secret'),
        AGENTD_DATA_DIR: path.join(dir, 'data'),
        AGENTD_HTTP_LISTEN: '127.0.0.1:0',
        AGENTD_GRPC_LISTEN: '127.0.0.1:0',
        AGENTD_METRICS_LISTEN: '127.0.0.1:0',
      },
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('AGENTD_GATEWAY_TOKEN_FILE=');
    expect(r.stdout).toContain('it must hold at least 16 characters');
    expect(r.stdout).not.toContain('short-secret');
  });
});

describe('contract module', () => {
  it('imports nothing', () => {
    const src = readFileSync(path.join(AGENTD_DIR, 'src', 'contract.ts'), 'utf8');
    expect(src).not.toMatch(/^\s*import\s/m);
    expect(src).not.toMatch(/\brequire\(|import\(/);
  });

  it('exports what the rest of the repository needs', () => {
    expect(contract).toMatchObject({
      AGENTD_HTTP_PORT: 8090,
      AGENTD_GRPC_PORT: 9500,
      HEALTH_PATH: '/health',
      READY_PATH: '/ready',
      METRICS_PATH: '/metrics',
      API_PREFIX: '/api/v1',
      SANDBOX_TOKEN_HEADER: 'x-agentd-sandbox-token',
      TOKEN_ISSUER: 'agentd',
      TOKEN_AUDIENCE: 'agentd-egress',
      GRPC_SERVICE: 'agentd.v1.Agentd',
      PROTO_PATHS: { agentd: 'proto/agentd/v1/agentd.proto', health: 'proto/grpc/health/v1/health.proto' },
    });
    expect(contract.METRICS.intentsTotal).toEqual({ name: 'agentd_intents_total', labels: ['capability', 'outcome'] });
    expect(contract.METRICS.intentDurationSeconds.name).toBe('agentd_intent_duration_seconds');
    expect(contract.METRICS.sandboxesActive.name).toBe('agentd_sandboxes_active');
    expect(contract.METRICS.egressRequestsTotal).toEqual({ name: 'agentd_egress_requests_total', labels: ['service', 'status'] });
    expect(contract.METRICS.storagePurgedRowsTotal).toEqual({ name: 'agentd_storage_purged_rows_total', labels: ['table'] });
    expect(contract).toMatchObject({
      AGENTD_METRICS_PORT: 9464,
      GATEWAY_TOKEN_HEADER: 'x-agentd-gateway-token',
      REGISTRY_BUNDLE_PATH: '/internal/v1/registry/bundle.tar.gz',
      REGISTRY_BUNDLE_ROOT: 'sandboxes',
    });
    // Every variable in the README's configuration table is in ENV, and the other way round.
    const readme = readFileSync(path.join(AGENTD_DIR, 'README.md'), 'utf8');
    const documented = new Set([...readme.matchAll(/^\| `(AGENTD_[A-Z_]+)`/gm)].map((m) => m[1] as string));
    expect(documented.size).toBe(Object.keys(contract.ENV).length);
    for (const name of Object.values(contract.ENV)) expect(documented.has(name), name).toBe(true);
    for (const name of documented) expect(Object.values(contract.ENV) as string[], name).toContain(name);
  });

  it('the proto paths exist relative to the agentd package', () => {
    for (const p of Object.values(contract.PROTO_PATHS)) expect(() => readFileSync(path.join(AGENTD_DIR, p))).not.toThrow();
  });
});
