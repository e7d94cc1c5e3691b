// The local stack (the harness): the real gateway Envoy, egress Envoy, OPA (polling the bundle
// server for the built bundle and agentd for the sandbox registry), the bundle server Envoy,
// agentd and a stand-in upstream (HTTPS with a test CA), as processes on loopback. Every file comes from renderPlatform, as in a deploy; only
// addresses differ. The tests, `npm run dev`, `npm run policy` and the benchmarks use it; it
// lives with the scripts because tooling never imports from test/.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { join } from 'node:path';
import { installLiveRevision } from '../../components/targets/live-install.ts';
import { sha256Hex } from '../../policy/bundle.ts';
import type { PolicySpec } from '../../policy/spec.ts';
import type { BundleSigner } from '../../policy/signing.ts';
import { credentialValueFile, type Upstream } from '../../components/render/envoy/egress.ts';
import { DEFAULT_PROXY_LIMITS, envoyArgs, type ProxyLimits } from '../../components/render/envoy/common.ts';
import { renderBundleServerConfig } from '../../components/render/envoy/bundles.ts';
import { OPA_BUNDLE_FILE, OPA_MASK_FILE, POLICY_BUNDLE_RESOURCE, opaRunArgs, opaRuntimeEnv } from '../../components/render/opa.ts';
import { toYaml } from '../../components/render/yaml.ts';
import {
  EGRESS_SDS_SUBDIR,
  ENVOY_CONFIG_FILE,
  GATEWAY_SDS_FILES,
  MAX_BUNDLE_BYTES,
  OPA_CONFIG_FILE,
  fileBytes,
  jwksDocument,
  renderPlatform,
  renderProxyFiles,
  type FileContent,
  type PlatformRenderInput,
  type RenderedPlatform,
} from '../../components/render/platform.ts';
import { SECRET_FILES } from '../../components/layout.ts';
import { ENV, GATEWAY_TOKEN_HEADER, IDENTITY_HEADERS, READY_PATH } from '../../agentd/src/contract.ts';
import { ManagedProcess, answers, freePort, tcpAnswers } from './processes.ts';
import { DEFAULT_RATE_LIMITS, type RateLimitsConfig } from '../../components/config.ts';
import { REDIS_CONFIG_FILE, rateLimitServiceEnv, redisConfig, renderRateLimitServiceFiles } from '../../components/render/ratelimit.ts';
import { StandInUpstream, makeTestCa, type TestCa } from './standin.ts';
import { ephemeralBundleSigner } from './fixtures.ts';
import { REPO_ROOT, redisServerPath, toolPath } from './tools.ts';

export interface StackOptions {
  readonly spec: PolicySpec;
  /** Where everything is written (configs, data, logs). */
  readonly dir: string;
  /** Extra environment for agentd. */
  readonly agentdEnv?: NodeJS.ProcessEnv;
  /** Services left without a configured credential. */
  readonly withoutCredential?: readonly string[];
  /** Start agentd with `node --watch` (dev mode). */
  readonly watchAgentd?: boolean;
  /** Fixed ports (dev mode); free ports otherwise. */
  readonly ports?: Partial<StackPorts>;
  /** API keys to use (dev mode keeps its keys across restarts); random otherwise. */
  readonly apiKeys?: Readonly<Record<string, string>>;
  /** Credentials to use, by service; random test values otherwise. */
  readonly credentials?: Readonly<Record<string, string>>;
  /** `standin` (default): every service goes to the stand-in; `real`: to the policy's base URLs. */
  readonly upstreams?: 'standin' | 'real';
  /** The gateway speaks only TLS, with a certificate for `localhost` from the stack's test CA. */
  readonly tls?: boolean;
  /** Override the proxies' overload and timeout limits. */
  readonly limits?: Partial<ProxyLimits>;
  /**
   * Global rate limits: a Redis and Envoy's rate-limit service join the stack, and both proxies
   * ask it (agentd:rateLimits.mode global), with these failure modes (the defaults of the stack config otherwise).
   */
  readonly globalRateLimits?: { readonly whenUnavailable?: Partial<RateLimitsConfig['whenUnavailable']> };
}

export interface StackPorts {
  gateway: number;
  gatewayAdmin: number;
  gatewayStats: number;
  egress: number;
  egressAdmin: number;
  egressStats: number;
  opaGrpc: number;
  opaHttp: number;
  bundles: number;
  bundlesAdmin: number;
  bundlesStats: number;
  agentdHttp: number;
  agentdGrpc: number;
  agentdMetrics: number;
  upstream: number;
  rateLimitGrpc: number;
  rateLimitHttp: number;
  rateLimitDebug: number;
  redis: number;
}

export interface Stack {
  readonly dir: string;
  readonly ports: StackPorts;
  readonly gatewayUrl: string;
  readonly gatewayGrpc: string;
  readonly egressUrl: string;
  readonly agentdUrl: string;
  readonly agentdMetricsUrl: string;
  /** The per-deploy token the gateway sends agentd (a test may play a caller that has it). */
  readonly gatewayToken: string;
  /** The token OPA presents to fetch the sandbox registry. */
  readonly registryToken: string;
  /**
   * The headers the gateway sends agentd for an admin (its token and the identity OPA answers):
   * for a test that calls agentd directly, as the gateway does.
   */
  readonly asGateway: Readonly<Record<string, string>>;
  /** Plaintext API keys by client id (they exist only here and in the test). */
  readonly apiKeys: Readonly<Record<string, string>>;
  /** Plaintext upstream credentials by service id. */
  readonly credentials: Readonly<Record<string, string>>;
  /** The sandbox-token signing key (base64url), for the secret scan and forged-token tests. */
  readonly signingKey: string;
  /** Signs the policy bundles this stack's OPA accepts (a key made for the stack, as a deploy makes one). */
  readonly bundleSigner: BundleSigner;
  readonly jwksFile: string;
  /**
   * Where the stack keeps secret files, as a target writes them from Pulumi secrets: the secret
   * directory, the proxies' live secret directories, and the staging of each live revision (what
   * the Docker target's writer container receives).
   */
  readonly secretDirs: readonly string[];
  readonly ca: TestCa;
  readonly upstream: StandInUpstream;
  readonly rendered: RenderedPlatform;
  readonly processes: Readonly<Record<'opa' | 'bundles' | 'gateway' | 'egress' | 'agentd', ManagedProcess>>;
  /** With globalRateLimits: Redis and the rate-limit service. */
  readonly limiter?: Readonly<Record<'redis' | 'ratelimit', ManagedProcess>>;
  /** What the stack's files were rendered from (a test renders another replica of a proxy from it). */
  readonly renderInput: PlatformRenderInput;
  /**
   * Re-renders the proxies' live files from `change(input)` and installs them as a deploy does
   * (with `secrets` replacing live secret files, e.g. a rotated credential), the proxies left
   * running. Throws if the change would touch a bootstrap (that needs a restart).
   */
  reconfigure(
    change: (input: PlatformRenderInput) => PlatformRenderInput,
    secrets?: { gateway?: Record<string, string>; egress?: Record<string, string> },
    opts?: {
      /** Render from this policy spec instead (e.g. with an egress service added). */
      spec?: PolicySpec;
      /** Live files left as they are (e.g. cds.yaml: the listener arrives before its clusters). */
      keepFiles?: readonly string[];
    },
  ): void;
  /**
   * Serves `bundle` as OPA's policy bundle with revision `revision` (its ETag): the bundle
   * server restarts with it, as a deploy replaces the bundle server, and OPA is left running.
   */
  serveBundle(bundle: Buffer, revision: string): Promise<void>;
  /**
   * Starts another replica of a proxy from the stack's render input, on ports of its own, with
   * everything in its bootstrap: what a second Kubernetes replica is; `change` alters its render
   * input (e.g. a replica with local limits beside global ones). Stopped with the stack.
   */
  startReplica(
    proxy: 'gateway' | 'egress',
    change?: (input: PlatformRenderInput) => PlatformRenderInput,
  ): Promise<{ readonly port: number; readonly statsPort: number; readonly pid: number | undefined }>;
  /** Every log the stack wrote so far. */
  logs(): string;
  stop(): Promise<void>;
}

const write = (dir: string, files: Readonly<Record<string, FileContent>>) => {
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), fileBytes(content));
  }
};

export async function startStack(opts: StackOptions): Promise<Stack> {
  const { spec, dir } = opts;
  mkdirSync(dir, { recursive: true });
  const ports: StackPorts = {
    gateway: 0,
    gatewayAdmin: 0,
    gatewayStats: 0,
    egress: 0,
    egressAdmin: 0,
    egressStats: 0,
    opaGrpc: 0,
    opaHttp: 0,
    bundles: 0,
    bundlesAdmin: 0,
    bundlesStats: 0,
    agentdHttp: 0,
    agentdGrpc: 0,
    agentdMetrics: 0,
    upstream: 0,
    rateLimitGrpc: 0,
    rateLimitHttp: 0,
    rateLimitDebug: 0,
    redis: 0,
    ...opts.ports,
  };
  for (const k of Object.keys(ports) as (keyof StackPorts)[]) if (!ports[k]) ports[k] = await freePort();

  const apiKeys = opts.apiKeys ?? Object.fromEntries(spec.clients.map((c) => [c.id, `agk_${randomBytes(24).toString('base64url')}`]));
  const credentials: Record<string, string> = { ...opts.credentials };
  for (const s of Object.values(spec.egressServices)) {
    if (!opts.credentials && s.credential && !opts.withoutCredential?.includes(s.id)) credentials[s.id] = `cred-${s.id}-${randomBytes(16).toString('hex')}`;
  }
  const signingKey = randomBytes(32).toString('base64url');
  const bundleSigner = ephemeralBundleSigner();
  const gatewayToken = randomBytes(24).toString('base64url');
  const registryToken = randomBytes(24).toString('base64url');
  const limits: ProxyLimits = { ...DEFAULT_PROXY_LIMITS, ...opts.limits };

  mkdirSync(join(dir, 'ca'), { recursive: true });
  const ca = makeTestCa(join(dir, 'ca'));
  const upstream = new StandInUpstream();
  await upstream.start(ca, ports.upstream);

  const gatewayDir = join(dir, 'gateway');
  const egressDir = join(dir, 'egress');
  const opaDir = join(dir, 'opa');
  const bundlesDir = join(dir, 'bundles');
  // The proxies' live directories, updated in place as a deploy does (installLiveRevision).
  const liveDirs = {
    gateway: { dir: join(dir, 'gateway-live'), secretDir: join(dir, 'gateway-live-secrets') },
    egress: { dir: join(dir, 'egress-live'), secretDir: join(dir, 'egress-live-secrets') },
  };
  const secretsDir = join(dir, 'secrets');
  const loopback = (port: number) => ({ host: '127.0.0.1', port });
  const standIn: Upstream = { scheme: 'https', host: 'localhost', port: upstream.port };
  const bundlesListen = { traffic: loopback(ports.bundles), adminPort: ports.bundlesAdmin, stats: loopback(ports.bundlesStats) };
  const global = opts.globalRateLimits;
  const whenUnavailable = { ...DEFAULT_RATE_LIMITS.whenUnavailable, ...global?.whenUnavailable };
  const rateLimitService = (proxy: 'gateway' | 'egress') =>
    global ? { rateLimitService: { endpoint: loopback(ports.rateLimitGrpc), whenUnavailable: whenUnavailable[proxy] } } : {};
  const renderInput: PlatformRenderInput = {
    gateway: {
      listen: { traffic: loopback(ports.gateway), adminPort: ports.gatewayAdmin, stats: loopback(ports.gatewayStats) },
      agentdHttp: loopback(ports.agentdHttp),
      agentdGrpc: loopback(ports.agentdGrpc),
      opa: loopback(ports.opaGrpc),
      maxRequestBytes: 64 * 1024,
      upstreamTimeoutSeconds: 30,
      agentdTokenSdsFile: join(liveDirs.gateway.dir, GATEWAY_SDS_FILES.agentdToken),
      ...(opts.tls ? { tls: { sdsFile: join(liveDirs.gateway.dir, GATEWAY_SDS_FILES.tls) } } : {}),
      limits,
      ...rateLimitService('gateway'),
    },
    gatewaySecrets: {
      agentdTokenFile: join(liveDirs.gateway.secretDir, SECRET_FILES.gatewayToken),
      ...(opts.tls ? { tls: { certificateChain: ca.certFile, privateKey: ca.keyFile } } : {}),
    },
    egress: {
      listen: { traffic: loopback(ports.egress), adminPort: ports.egressAdmin, stats: loopback(ports.egressStats) },
      opa: loopback(ports.opaGrpc),
      jwksFile: join(secretsDir, 'jwks.json'),
      sdsDir: join(liveDirs.egress.dir, EGRESS_SDS_SUBDIR),
      credentialDir: liveDirs.egress.secretDir,
      caBundleFile: opts.upstreams === 'real' ? '/etc/ssl/certs/ca-certificates.crt' : ca.caFile,
      upstreams: opts.upstreams === 'real' ? {} : Object.fromEntries(Object.keys(spec.egressServices).map((id) => [id, standIn])),
      configuredCredentials: Object.keys(credentials),
      limits,
      ...rateLimitService('egress'),
    },
    opa: {
      grpc: loopback(ports.opaGrpc),
      bundle: { url: `http://127.0.0.1:${ports.bundles}` },
      registry: { url: `http://127.0.0.1:${ports.agentdHttp}`, tokenFile: join(secretsDir, SECRET_FILES.registryToken) },
    },
    bundles: { listen: bundlesListen, configDir: bundlesDir },
    live: liveDirs,
    keyHashes: Object.fromEntries(Object.entries(apiKeys).map(([id, k]) => [id, sha256Hex(k)])),
    bundleSigner,
  };
  const rendered = renderPlatform(spec, renderInput);
  write(gatewayDir, rendered.gateway);
  write(egressDir, rendered.egress);
  write(opaDir, rendered.opa);
  write(bundlesDir, rendered.bundles);
  // Secret files, as a target writes them from Pulumi secrets.
  write(secretsDir, {
    'jwks.json': jwksDocument('k1', signingKey),
    [SECRET_FILES.gatewayToken]: gatewayToken,
    [SECRET_FILES.registryToken]: registryToken,
    [SECRET_FILES.policyVerificationKey]: bundleSigner.publicKeyPem,
  });
  const liveSecrets = {
    gateway: { [SECRET_FILES.gatewayToken]: gatewayToken } as Record<string, string>,
    egress: Object.fromEntries(Object.entries(credentials).map(([id, v]) => [credentialValueFile(id), v])),
  };
  // Each live revision as a deploy installs it: staged, then one atomic swap per directory.
  let revisions = 0;
  const liveFiles: Record<'gateway' | 'egress', Readonly<Record<string, FileContent>>> = { gateway: {}, egress: {} };
  const installLive = (proxy: 'gateway' | 'egress', files: Readonly<Record<string, FileContent>>, secrets: Readonly<Record<string, string>>) => {
    liveFiles[proxy] = files;
    const revision = `r${++revisions}`;
    const staging = join(dir, 'staging', `${proxy}-${revision}`);
    write(join(staging, 'files'), files);
    write(join(staging, 'secrets'), secrets);
    installLiveRevision(fs, path, join(staging, 'files'), liveDirs[proxy].dir, revision);
    installLiveRevision(fs, path, join(staging, 'secrets'), liveDirs[proxy].secretDir, revision);
  };
  for (const proxy of ['gateway', 'egress'] as const) installLive(proxy, rendered.live![proxy], liveSecrets[proxy]);

  const logDir = join(dir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const envoy = (name: 'gateway' | 'egress' | 'bundles', cfgDir: string, adminPort: number, logName: string = name) =>
    new ManagedProcess(
      {
        name,
        command: toolPath('envoy'),
        args: [...envoyArgs(join(cfgDir, ENVOY_CONFIG_FILE)), '--use-dynamic-base-id', '--concurrency', '1'],
        ready: () => answers(`http://127.0.0.1:${adminPort}/ready`),
      },
      join(logDir, `${logName}.log`),
    );
  const processes = {
    opa: new ManagedProcess(
      {
        name: 'opa',
        command: toolPath('opa'),
        args: opaRunArgs({
          apiAddr: `127.0.0.1:${ports.opaHttp}`,
          configFile: join(opaDir, OPA_CONFIG_FILE),
          maskFile: join(opaDir, OPA_MASK_FILE),
          verificationKeyFile: join(secretsDir, SECRET_FILES.policyVerificationKey),
        }),
        ready: () => answers(`http://127.0.0.1:${ports.opaHttp}/health?bundles`),
        env: opaRuntimeEnv(),
      },
      join(logDir, 'opa.log'),
    ),
    bundles: envoy('bundles', bundlesDir, ports.bundlesAdmin),
    gateway: envoy('gateway', gatewayDir, ports.gatewayAdmin),
    egress: envoy('egress', egressDir, ports.egressAdmin),
    agentd: new ManagedProcess(
      {
        name: 'agentd',
        command: process.execPath,
        args: [...(opts.watchAgentd ? ['--watch-path', join(REPO_ROOT, 'agentd/src'), '--watch-preserve-output'] : []), join(REPO_ROOT, 'agentd/src/main.ts')],
        env: {
          [ENV.mode]: 'production',
          [ENV.httpListen]: `127.0.0.1:${ports.agentdHttp}`,
          [ENV.grpcListen]: `127.0.0.1:${ports.agentdGrpc}`,
          [ENV.egressUrl]: `http://127.0.0.1:${ports.egress}`,
          [ENV.dataDir]: join(dir, 'agentd-data'),
          [ENV.tokenKeyFile]: join(secretsDir, 'jwks.json'),
          [ENV.sandboxTiers]: Object.keys(spec.sandboxTiers).join(','),
          [ENV.logLevel]: 'info',
          [ENV.metricsListen]: `127.0.0.1:${ports.agentdMetrics}`,
          [ENV.gatewayTokenFile]: join(secretsDir, SECRET_FILES.gatewayToken),
          [ENV.registryTokenFile]: join(secretsDir, SECRET_FILES.registryToken),
          ...opts.agentdEnv,
        },
        ready: () => answers(`http://127.0.0.1:${ports.agentdHttp}${READY_PATH}`),
      },
      join(logDir, 'agentd.log'),
    ),
  };
  const rateLimitDir = join(dir, 'ratelimit');
  if (global) write(rateLimitDir, { ...renderRateLimitServiceFiles(spec), [REDIS_CONFIG_FILE]: redisConfig('127.0.0.1', ports.redis) });
  const limiter = global
    ? {
        redis: new ManagedProcess(
          { name: 'redis', command: redisServerPath(), args: [join(rateLimitDir, REDIS_CONFIG_FILE)], ready: () => tcpAnswers(ports.redis) },
          join(logDir, 'redis.log'),
        ),
        ratelimit: new ManagedProcess(
          {
            name: 'ratelimit',
            command: toolPath('ratelimit'),
            args: [],
            env: rateLimitServiceEnv({
              configDir: rateLimitDir,
              grpc: loopback(ports.rateLimitGrpc),
              http: loopback(ports.rateLimitHttp),
              debugPort: ports.rateLimitDebug,
              redis: `127.0.0.1:${ports.redis}`,
            }),
            ready: () => answers(`http://127.0.0.1:${ports.rateLimitHttp}/healthcheck`),
          },
          join(logDir, 'ratelimit.log'),
        ),
      }
    : undefined;
  const started: ManagedProcess[] = [];
  // Replicas started later (startReplica).
  const extra: ManagedProcess[] = [];
  let replicas = 0;
  try {
    // The bundle server and agentd first: OPA is ready only once it has both bundles, the
    // policy and the sandbox registry.
    for (const p of [
      ...(limiter ? [limiter.redis, limiter.ratelimit] : []),
      processes.bundles,
      processes.agentd,
      processes.opa,
      processes.egress,
      processes.gateway,
    ]) {
      await p.start();
      started.push(p);
    }
  } catch (e) {
    await Promise.all(started.map((p) => p.stop()));
    await upstream.stop();
    throw e;
  }

  return {
    dir,
    ports,
    apiKeys,
    credentials,
    signingKey,
    bundleSigner,
    ca,
    upstream,
    rendered,
    processes,
    ...(limiter ? { limiter } : {}),
    renderInput,
    gatewayToken,
    registryToken,
    asGateway: {
      [GATEWAY_TOKEN_HEADER]: gatewayToken,
      [IDENTITY_HEADERS.clientId]: 'admin',
      [IDENTITY_HEADERS.clientRole]: 'admin',
      [IDENTITY_HEADERS.clientScope]: 'all',
      [IDENTITY_HEADERS.sandboxTiers]: Object.keys(spec.sandboxTiers).sort().join(','),
    },
    jwksFile: join(secretsDir, 'jwks.json'),
    secretDirs: [secretsDir, liveDirs.gateway.secretDir, liveDirs.egress.secretDir, join(dir, 'staging')],
    gatewayUrl: `${opts.tls ? 'https' : 'http'}://${opts.tls ? 'localhost' : '127.0.0.1'}:${ports.gateway}`,
    gatewayGrpc: `127.0.0.1:${ports.gateway}`,
    egressUrl: `http://127.0.0.1:${ports.egress}`,
    agentdUrl: `http://127.0.0.1:${ports.agentdHttp}`,
    agentdMetricsUrl: `http://127.0.0.1:${ports.agentdMetrics}`,
    async startReplica(proxy, change = (i) => i) {
      const n = ++replicas;
      const listen = { traffic: loopback(await freePort()), adminPort: await freePort(), stats: loopback(await freePort()) };
      const changed = change(renderInput);
      const input = { ...changed, [proxy]: { ...changed[proxy], listen }, live: undefined };
      const replicaDir = join(dir, `${proxy}-replica-${n}`);
      write(replicaDir, renderProxyFiles(spec, input)[proxy]);
      const p = envoy(proxy, replicaDir, listen.adminPort, `${proxy}-replica-${n}`);
      extra.push(p);
      await p.start();
      return { port: listen.traffic.port, statsPort: listen.stats.port, pid: p.pid };
    },
    logs: () =>
      readdirSync(logDir)
        .map((f) => readFileSync(join(logDir, f), 'utf8'))
        .join('\n'),
    reconfigure(change, secrets = {}, opts = {}) {
      const next = renderProxyFiles(opts.spec ?? spec, change(renderInput));
      for (const proxy of ['gateway', 'egress'] as const) {
        if (next[proxy][ENVOY_CONFIG_FILE] !== rendered[proxy][ENVOY_CONFIG_FILE]) {
          throw new Error(`the change touches the ${proxy}'s bootstrap, which needs a restart, not a live update`);
        }
        liveSecrets[proxy] = { ...liveSecrets[proxy], ...secrets[proxy] };
        const files = { ...next.live![proxy] };
        for (const kept of opts.keepFiles ?? []) if (liveFiles[proxy][kept] !== undefined) files[kept] = liveFiles[proxy][kept]!;
        installLive(proxy, files, liveSecrets[proxy]);
      }
    },
    async serveBundle(bundle: Buffer, revision: string) {
      await processes.bundles.stop();
      const file = join(bundlesDir, OPA_BUNDLE_FILE);
      writeFileSync(file, bundle);
      const config = renderBundleServerConfig({
        listen: bundlesListen,
        bundles: [{ path: POLICY_BUNDLE_RESOURCE, file, revision }],
        maxBundleBytes: MAX_BUNDLE_BYTES,
      });
      writeFileSync(join(bundlesDir, ENVOY_CONFIG_FILE), toYaml(config));
      await processes.bundles.start();
    },
    async stop() {
      await Promise.all([...extra, ...Object.values(processes), ...Object.values(limiter ?? {})].map((p) => p.stop()));
      await upstream.stop();
    },
  };
}
